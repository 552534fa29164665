"""A Rasa 3.x project folder, as ``rasa init`` lays it out, loaded as a Switchboard bot.

```
config.yml        language, pipeline, policies      -> BotSpec (fallback threshold, pipeline), PolicyConfig
domain.yml        or domain/ (every .yml, merged)   -> Domain
data/             nlu, stories, rules, responses    -> BotSpec.intents / synonyms / regexes / lookups, Story,
                  (by content)                      Domain.responses
actions/          or actions.py                     -> DialogueSpec.actions_module
endpoints.yml     action_endpoint                   -> DialogueSpec.action_endpoint
credentials.yml   rest/socketio, slack, telegram    -> BotSpec.channels
tests/test_*.yml  test stories                      -> rasa_test_files() (for `switchboard test`)
```

``load_rasa_project`` returns the same ``(BotSpec, DialogueSpec)`` a ``bot.yml`` bot loads into
(bots/loader.py chooses between them), so one engine runs both and no file is generated that
the user would have to keep. Every problem of every file is reported at once, as
``file:line: reason`` in one ConfigError; what loads but is not supported is a note in
``BotSpec.notes`` (``file:line: not supported: ...``), never silently dropped. The bot's name is
the folder's name, made a valid bot name. docs/rasa.md is the migration guide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from bots.botspec import BotSpec, Example, Intent
from bots.dialogue.domain import DEFAULT_ACTIONS, Domain
from bots.dialogue.rasa_config import RasaConfig, parse_config, parse_credentials, parse_endpoints, rasa_files
from bots.dialogue.rasa_data import TrainingData, data_files, read_data_file
from bots.dialogue.rasa_domain import domain_files, parse_domain
from bots.dialogue.rasa_yaml import Findings
from bots.dialogue.spec import DialogueSpec
from bots.errors import ConfigError
from bots.yamlspan import Located

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class RasaPaths:
    """The files of one Rasa project (a folder's own layout, or what a bot.yml's ``rasa:`` names)."""

    domain: tuple[Path, ...]
    data: tuple[Path, ...] = ()
    config: Path | None = None
    endpoints: Path | None = None
    credentials: Path | None = None
    actions: Path | None = None
    tests: tuple[Path, ...] = field(default_factory=tuple)

    @classmethod
    def of_folder(cls, directory: Path) -> RasaPaths:
        found = rasa_files(directory)
        domain = found["domain"]
        return cls(domain=(domain,) if domain is not None else (), data=(found["data"],) if found["data"] else (),
                   config=found["config"], endpoints=found["endpoints"], credentials=found["credentials"],
                   actions=found["actions"], tests=tuple(rasa_test_files(directory)))


def is_rasa_project(directory: Path) -> bool:
    """A folder Rasa would train: a domain (file or folder) or a config.yml, and no bot.yml."""
    found = rasa_files(directory)
    return not (directory / "bot.yml").exists() and (found["domain"] is not None or found["config"] is not None)


def bot_name(directory: Path) -> str:
    """The folder's name as a bot name (letters, digits, '_', '-', '.'; 64 at most)."""
    raw = directory.resolve().name
    name = _NAME_CHARS.sub("-", raw).strip("-_.")[:64].strip("-_.")
    return name or "bot"


def rasa_test_files(directory: Path) -> list[Path]:
    """Rasa's test stories: ``tests/**/test_*.yml`` (Rasa's prefix), path order."""
    tests = directory / "tests"
    if not tests.is_dir():
        return []
    return sorted(p for p in tests.rglob("test_*") if p.is_file() and p.suffix.lower() in (".yml", ".yaml"))


def load_rasa_project(directory: Path | str) -> tuple[BotSpec, DialogueSpec]:
    """Load the Rasa project in ``directory``; ConfigError listing every problem as ``file:line: reason``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a folder")
    return load_rasa_paths(directory, RasaPaths.of_folder(directory))


def load_rasa_paths(directory: Path, paths: RasaPaths, *, name: str | None = None,
                    channels: tuple[str, ...] | None = None) -> tuple[BotSpec, DialogueSpec]:
    """Load the Rasa files ``paths`` names as the bot of ``directory`` (its models live there).
    ``name``/``channels`` given (by a bot.yml) win over the folder name and credentials.yml."""
    findings = Findings()
    loaded = read_rasa_paths(directory, paths, findings, name=name, channels=channels)
    findings.raise_errors()
    return loaded


def read_rasa_paths(directory: Path, paths: RasaPaths, findings: Findings, *, name: str | None = None,
                    channels: tuple[str, ...] | None = None,
                    config_required: bool = True) -> tuple[BotSpec, DialogueSpec]:
    """``load_rasa_paths`` without raising: errors and notes go to ``findings`` (``switchboard check``
    shows both); the bot is built from whatever could be read. ``config_required``: a Rasa project folder
    needs its config.yml, as ``rasa train`` does; a bot.yml pointing at Rasa files may leave it out."""
    if not paths.domain:
        findings.error(str(directory), "no domain: a Rasa project needs domain.yml (or a domain/ folder)")
    if paths.config is None and config_required:
        # rasa train (rasa.cli.utils.get_validated_path / get_validated_config) exits: "The path 'config.yml' does
        # not exist" / "The config file 'config.yml' does not exist. Use '--config' to specify a valid config
        # file." Training on assumed defaults would be a bot the project's own Rasa never trained.
        findings.error(str(directory / "config.yml"),
                       "no config.yml: a Rasa project needs one, and rasa train refuses a project without it "
                       "(\"The config file 'config.yml' does not exist\"); add one (rasa init's, with `language: en` "
                       "and its pipeline and policies commented out, trains Rasa's defaults)")
    files = [f for p in paths.domain for f in domain_files(p)]
    for p in paths.domain:
        if p.is_dir() and not domain_files(p):
            findings.error(str(p), "the domain folder holds no .yml files")
    domain, _declared_at = parse_domain(files, findings)
    data = TrainingData()
    for path in data_files(list(paths.data), findings):
        if not read_data_file(path, data, findings):
            findings.note(f"{path}:1", "no nlu, stories or rules: not training data, not read")
    if paths.domain and not any(data.examples.values()):
        _no_nlu_data(directory, paths, data, findings)
    domain = _with_data_responses(domain, data, findings)
    config = parse_config(paths.config, findings)
    domain = replace(domain, nlu_ambiguity_threshold=config.fallback_ambiguity)
    endpoint = parse_endpoints(paths.endpoints, findings)
    found_channels = parse_credentials(paths.credentials, findings) if channels is None else channels
    spec = _bot_spec(directory, paths, domain, data, config, findings,
                     name=name or bot_name(directory), channels=found_channels)
    dialogue = DialogueSpec(
        actions_module=paths.actions,
        component_modules=tuple(dict.fromkeys(name.rpartition(".")[0] for name in config.custom_components)),
        action_endpoint=endpoint,
        session_expiry_s=domain.session.session_expiration_time_min * 60,
        action_refs=_custom_actions(domain, _declared_at),
        domain=domain,
        stories=tuple(data.stories),
        policy=config.policy,
        retrieval={intent: {key: tuple(texts) for key, texts in keys.items()}
                   for intent, keys in data.retrieval.items()},
    )
    return spec, dialogue


def _no_nlu_data(directory: Path, paths: RasaPaths, data: TrainingData, findings: Findings) -> None:
    """No NLU example in the training data: an error, with the YAML files of training data the project keeps
    outside its data paths (``nlu.yml`` beside ``domain.yml``), which Rasa does not read either (``rasa train``
    reads ``data/`` unless ``--data`` names other paths). Without stories too, ``rasa train`` refuses the project
    ("No training data given", ``model_training.train``); with stories it trains a dialogue model alone, which
    Switchboard cannot serve: its NLU model is trained on the examples."""
    where = str(paths.data[0]) if paths.data else str(directory / "data")
    known = {p.resolve() for p in (*paths.domain, paths.config, paths.endpoints, paths.credentials) if p is not None}
    outside: list[str] = []
    for candidate in sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")]):
        if candidate.resolve() in known or any(candidate.resolve().is_relative_to(d.resolve()) for d in paths.data):
            continue
        try:
            content = yaml.safe_load(candidate.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(content, dict) and any(key in content for key in ("nlu", "stories", "rules")):
            outside.append(candidate.name)
    what = ("no training data: no NLU example, story or rule (rasa train refuses such a project too: "
            "'No training data given')" if not data.stories else
            "no NLU example: Rasa would train its dialogue model alone ('No NLU data present'); Switchboard "
            "trains its NLU model on the examples of the domain's intents and cannot serve without it")
    if outside:
        what += (f"; {', '.join(outside)} in {directory} hold training data but lie outside data/, which Rasa "
                 f"does not read unless --data names them: move them under data/")
    findings.error(where, what)


def _with_data_responses(domain: Domain, data: TrainingData, findings: Findings) -> Domain:
    """The data files' ``responses:`` merged into the domain, as Rasa's importer merges them (a response of
    the training data wins over a same-named one of the domain, noted)."""
    if not data.responses:
        return domain
    for name, where in data.response_where.items():
        if name in domain.responses:
            findings.note(where, f"response '{name}' is also defined in the domain; this one (the training "
                                 "data's) is used, as Rasa merges them")
    return replace(domain, responses={**domain.responses, **data.responses})


def _line(where: str) -> int:
    tail = where.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _bot_spec(directory: Path, paths: RasaPaths, domain: Domain, data: TrainingData, config: RasaConfig,
              findings: Findings, *, name: str, channels: tuple[str, ...]) -> BotSpec:
    intents: dict[str, Intent] = {}
    for intent in domain.intents.values():
        examples: list[Example] = data.examples.get(intent.name, [])
        where = data.intent_where.get(intent.name, intent.where)
        intents[intent.name] = Intent(intent.name, tuple(examples), (), line=_line(where))
    for intent_name, examples in data.examples.items():  # in the NLU data, not in the domain: check reports it
        if intent_name not in intents:
            intents[intent_name] = Intent(intent_name, tuple(examples), (),
                                          line=_line(data.intent_where.get(intent_name, "")))
    sections: dict[str, Located] = {}
    if config.language is not None:
        sections["language"] = config.language
    source = paths.domain[0] if paths.domain else directory / "domain.yml"
    try:
        relative = str(source.relative_to(directory))
    except ValueError:
        relative = str(source)
    return BotSpec(
        name=name, directory=directory, intents=intents, fallback_threshold=config.fallback_threshold,
        channels=channels, description=f"Rasa project {directory.resolve().name}", synonyms=dict(data.synonyms),
        sections=sections, source=relative, regexes={k: tuple(v) for k, v in data.regexes.items()},
        lookups={k: tuple(v) for k, v in data.lookups.items()}, pipeline=config.pipeline,
        model_entities_at=config.model_entities_at,
        notes=tuple(findings.notes), rasa_project=True,
    )


def _custom_actions(domain: Domain, declared_at: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The domain's own actions that run as code (not responses, forms or Rasa's defaults, unless the domain
    overrides one by listing it), with where each is declared: what the actions package or the action server
    must provide."""
    return tuple((name, declared_at.get(name, "")) for name in domain.actions
                 if name not in domain.responses and name not in domain.forms
                 and (name not in DEFAULT_ACTIONS or domain.overrides(name)))

