"""The naive baseline of bench/load.py: a Hugging Face ``pipeline`` called per request behind
FastAPI (torch eager, no batching, no store), the way many bot prototypes are served.

It classifies with the packaged MiniLM encoder and a sequence-classification head of the
same size as the bot's: the compute per request is what a fine-tuned model of that shape
costs (the head's weights do not change the cost, so its answers are not meaningful).

    python bench/naive_server.py --port 8001 --labels 27
"""


import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--labels", type=int, default=27)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from training.tokens import base_model_path  # the packaged MiniLM folder

    torch.set_num_threads(args.threads)
    path = base_model_path("")
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=args.labels)
    tokenizer = AutoTokenizer.from_pretrained(path)
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1)

    app = FastAPI()

    class Message(BaseModel):
        conversation_id: str
        message_id: str
        text: str

    @app.post("/bots/{bot}/webhooks/web")
    def receive(bot: str, body: Message) -> dict[str, object]:
        result = classify(body.text)[0]
        return {"responses": [{"text": f"intent {result['label']}", "source": "template", "buttons": []}]}

    @app.get("/readyz")
    def readyz() -> str:
        return "ready"

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
