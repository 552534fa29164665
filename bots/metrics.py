"""Every Prometheus metric Switchboard exports, declared in one place.

Names share the ``switchboard_`` prefix and base units. Labels come only from bounded sets
(bot, channel, direction, intent, outcome, ...) and never carry user or conversation ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# No ``*_created`` series: one more per counter and histogram child (a counter's series double),
# and no rule or panel reads them (rate() and increase() handle restarts without them). Process-wide.
disable_created_metrics()

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SENTIMENT_BUCKETS = (-0.75, -0.5, -0.25, -0.05, 0.05, 0.25, 0.5, 0.75, 1.0)


class Metrics:
    """A registry per app instance (tests build many apps in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "switchboard_messages_total", "Messages by bot, channel and direction (in = from customers).",
            ["bot", "channel", "direction"], registry=r,
        )
        self.message_seconds = Histogram(
            "switchboard_message_seconds", "Time from receiving a customer message to having the answer.",
            ["bot", "channel"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.nlu_seconds = Histogram(
            "switchboard_nlu_seconds", "NLU inference time per batch.", ["bot"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.nlu_batch_size = Histogram(
            "switchboard_nlu_batch_size", "Texts per NLU inference batch.", ["bot"],
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=r,
        )
        self.intents = Counter(
            "switchboard_intents_total", "Predicted intents.", ["bot", "intent"], registry=r,
        )
        self.fallbacks = Counter(
            "switchboard_fallbacks_total", "Messages answered by the fallback.", ["bot", "channel"], registry=r,
        )
        self.handoffs = Counter(
            "switchboard_handoffs_total", "Conversations handed to a human.", ["bot", "channel"], registry=r,
        )
        self.duplicates = Counter(
            "switchboard_duplicate_messages_total", "Redelivered messages answered from the store.",
            ["bot", "channel"], registry=r,
        )
        self.rejected = Counter(
            "switchboard_rejected_requests_total", "Requests refused before processing.",
            ["channel", "reason"], registry=r,
        )
        self.errors = Counter(
            "switchboard_errors_total", "Failures while processing a message.", ["bot", "channel", "stage"], registry=r,
        )
        self.in_flight = Gauge(
            "switchboard_in_flight_messages", "Messages being processed now.", ["bot"], registry=r,
        )
        self.outgoing_retries = Counter(
            "switchboard_outgoing_retries_total", "Retried calls to channel APIs.", ["channel", "reason"], registry=r,
        )
        self.outgoing_failures = Counter(
            "switchboard_outgoing_failures_total", "Channel API calls that failed after retries.", ["channel"],
            registry=r,
        )
        self.store_up = Gauge(
            "switchboard_store_up", "1 when the conversation store answers.", ["store"], registry=r,
        )
        self.store_seconds = Histogram(
            "switchboard_store_seconds", "Conversation store operation time.", ["store", "operation"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.model_info = Gauge(
            "switchboard_model_info", "The model version served (value 1).", ["bot", "version"], registry=r,
        )
        self.handoff_queue = Gauge(
            "switchboard_handoff_queue", "Conversations waiting for an agent.", ["bot"], registry=r,
        )
        # Answer generation (bots/answers/generation.py, the local model or an OpenAI-compatible endpoint).
        self.generation_seconds = Histogram(
            "switchboard_generation_seconds", "Time to write a generated answer, first request to last token.",
            ["bot"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.generation_first_sentence_seconds = Histogram(
            "switchboard_generation_first_sentence_seconds", "Time to the first sentence of a streamed generated "
            "answer.", ["bot"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.generation_tokens = Counter(
            "switchboard_generation_tokens_total", "Tokens written by the answer generator.", ["bot"], registry=r,
        )
        self.generation_prompt_tokens = Counter(
            "switchboard_generation_prompt_tokens_total", "Prompt tokens sent to a generation endpoint (as it "
            "reports them).", ["bot"], registry=r,
        )
        self.generation_failures = Counter(
            "switchboard_generation_failures_total", "Generated answers that failed (endpoint error, timeout or "
            "open circuit): retrieval answered.", ["bot"], registry=r,
        )
        self.generation_retries = Counter(
            "switchboard_generation_retries_total", "Retried calls to the generation endpoint.", ["bot"], registry=r,
        )
        self.generation_circuit_open = Gauge(
            "switchboard_generation_circuit_open", "1 while the generation endpoint's circuit breaker is open.",
            ["bot"], registry=r,
        )
        self.answers_composed = Counter(
            "switchboard_answers_composed_total", "Questions no template fitted that the generator composed an answer "
            "for (answers.compose); result: composed (shown) or retrieval (every first sentence refused, or the "
            "generator failed).", ["bot", "result"], registry=r,
        )
        self.handoff_oldest_seconds = Gauge(
            "switchboard_handoff_oldest_seconds", "Age of the oldest conversation waiting for an agent.", ["bot"],
            registry=r,
        )
        # The review UI's analytics (bots/store/analytics.py) of the conversations started in the last day, read from
        # the shared store with the hand-off gauges (bots/handoff.py HandoffGauges); per bot only.
        self.containment_ratio = Gauge(
            "switchboard_containment_ratio", "Share of the last day's conversations that never reached a human.",
            ["bot"], registry=r,
        )
        self.handoff_ratio = Gauge(
            "switchboard_handoff_ratio", "Share of the last day's conversations handed to a human.", ["bot"],
            registry=r,
        )
        self.fallback_ratio = Gauge(
            "switchboard_fallback_ratio", "Share of the last day's conversations where the bot did not understand "
            "at least once.", ["bot"], registry=r,
        )
        self.first_agent_reply_seconds = Gauge(
            "switchboard_first_agent_reply_seconds", "Time from the hand-off to the first agent reply, over the last "
            "day's conversations that got one (quantile 0.5 or 0.9).", ["bot", "quantile"], registry=r,
        )
        # How customers feel (bots/nlu/sentiment.py): per bot only, never per user or conversation.
        self.csat = Counter(
            "switchboard_csat_ratings_total", "Customers' satisfaction ratings, one per conversation (bot.yml handoff: "
            "satisfaction), by score (1-5; thumbs: 5 up, 1 down).", ["bot", "score"], registry=r,
        )
        self.frustrated_conversations = Counter(
            "switchboard_frustrated_conversations_total", "Conversations whose customer turned frustrated (counted "
            "at their first frustrated message).", ["bot"], registry=r,
        )
        self.sentiment = Histogram(
            "switchboard_sentiment", "Sentiment score of customer messages (-1 very negative .. 1 very positive).",
            ["bot"], buckets=_SENTIMENT_BUCKETS, registry=r,
        )
