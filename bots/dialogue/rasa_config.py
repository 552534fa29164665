"""A Rasa project's ``config.yml``, ``endpoints.yml`` and ``credentials.yml``, as Switchboard runs them.

``config.yml``: ``policies:`` map onto the one policy ensemble (``PolicyConfig``): RulePolicy's
options one to one, Memoization/AugmentedMemoizationPolicy and TEDPolicy's ``max_history`` and
``epochs``. ``pipeline:`` components Switchboard replaces (tokenizers, featurizers, DIET and the
other classifiers: its own encoder with intent and entity heads) are noted once;
``FallbackClassifier``'s ``threshold`` is the bot's fallback threshold; ``EntitySynonymMapper``,
``RegexEntityExtractor`` and ``DucklingEntityExtractor`` run (their options, checked here, are kept
in ``BotSpec.pipeline`` for bots/nlu/pipeline.py), and ``CountVectorsFeaturizer``'s ``analyzer``,
``min_ngram`` and ``max_ngram`` are the intent classifier's n-gram features (bots/nlu/ngrams.py).
A component or policy Rasa 3 does not have is an error naming it (Rasa would refuse it too); a custom
one (``module.Class``) is noted: it does not run.
No ``pipeline``/``policies`` (``rasa init`` leaves them commented out) means Rasa's defaults.

``endpoints.yml``: ``action_endpoint`` (``${VAR}`` expanded as Rasa does) is the action server;
tracker/lock stores and event brokers are noted as not used (Switchboard keeps conversations in its
own store). ``credentials.yml``: ``rest``/``socketio`` are the web channel, ``slack`` and
``telegram`` map to ours (their secrets come from SWITCHBOARD_* settings, never a bot folder);
other channels are noted as not supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bots.botspec import PipelineComponent
from bots.dialogue.domain import PolicyConfig
from bots.dialogue.rasa_yaml import (
    Findings,
    as_list,
    as_mapping,
    boolean,
    check_keys,
    expand_env,
    name_of,
    number,
    plain_json,
    read_mapping,
)
from bots.dialogue.spec import DEFAULT_ACTION_TIMEOUT_S, ActionEndpoint
from bots.nlu.pipeline import (
    COUNT_VECTORS,
    COUNT_VECTORS_OPTIONS,
    COUNT_VECTORS_UNSUPPORTED,
    DUCKLING_EXTRACTOR,
    DUCKLING_OPTIONS,
    RASA_DEFAULT_FEATURIZERS,
    REGEX_EXTRACTOR,
    REGEX_OPTIONS,
    SYNONYM_MAPPER,
    check_component,
)
from bots.yamlspan import Located

# NLU components Switchboard's own model stands in for.
REPLACED_COMPONENTS = frozenset({
    "WhitespaceTokenizer", "JiebaTokenizer", "MitieTokenizer", "SpacyTokenizer", "SpacyNLP", "MitieNLP",
    "LanguageModelFeaturizer", "ConveRTFeaturizer", "RegexFeaturizer", "LexicalSyntacticFeaturizer",
    "MitieFeaturizer", "SpacyFeaturizer", "DIETClassifier", "KeywordIntentClassifier",
    "LogisticRegressionClassifier", "SklearnIntentClassifier", "MitieIntentClassifier", "CRFEntityExtractor",
    "MitieEntityExtractor",
})
# Of those, the ones whose entities Switchboard's model gives (its entity head): they join a message's entities
# where the pipeline lists the first of them (``BotSpec.model_entities_at``), as Rasa appends each extractor's.
MODEL_ENTITY_COMPONENTS = frozenset({"DIETClassifier", "CRFEntityExtractor", "MitieEntityExtractor"})
# Components Switchboard runs (their options travel in BotSpec.pipeline).
RUN_COMPONENTS = frozenset({"FallbackClassifier", "EntitySynonymMapper", "RegexEntityExtractor",
                            "DucklingEntityExtractor", COUNT_VECTORS})
# Their options, checked at load (bots/nlu/pipeline.py runs them).
_STEP_OPTIONS: dict[str, tuple[str, ...]] = {SYNONYM_MAPPER: (), REGEX_EXTRACTOR: tuple(REGEX_OPTIONS),
                                             DUCKLING_EXTRACTOR: DUCKLING_OPTIONS,
                                             COUNT_VECTORS: COUNT_VECTORS_OPTIONS}
UNSUPPORTED_COMPONENTS = {
    "SpacyEntityExtractor": "spaCy's named entities (PERSON, ORG, ...) are not extracted",
}
RASA2_POLICIES = {
    "FormPolicy": "forms run through RulePolicy in Rasa 3 (add RulePolicy and rules that activate the form)",
    "MappingPolicy": "intent triggers are rules in Rasa 3 (add RulePolicy and a rule per intent)",
    "FallbackPolicy": "use RulePolicy's core_fallback_threshold and FallbackClassifier",
    "TwoStageFallbackPolicy": "use RulePolicy with FallbackClassifier and action_two_stage_fallback",
    "SklearnPolicy": "removed in Rasa 3: use TEDPolicy",
    "KerasPolicy": "removed in Rasa 3: use TEDPolicy",
    "EmbeddingPolicy": "removed in Rasa 3: use TEDPolicy",
}
KNOWN_POLICIES = ("RulePolicy", "MemoizationPolicy", "AugmentedMemoizationPolicy", "TEDPolicy",
                  "UnexpecTEDIntentPolicy")
_RULE_OPTIONS = ("core_fallback_threshold", "core_fallback_action_name", "enable_fallback_prediction",
                 "restrict_rules", "check_for_contradictions")
_DEFAULT_FALLBACK_THRESHOLD = 0.3   # Rasa's default pipeline's FallbackClassifier
# FallbackClassifier's ambiguity_threshold when not given (rasa.core.constants.DEFAULT_NLU_FALLBACK_AMBIGUITY_THRESHOLD)
_DEFAULT_FALLBACK_AMBIGUITY = 0.1
_CONFIG_KEYS = ("recipe", "language", "pipeline", "policies", "assistant_id")
_URL = re.compile(r"^https?://[^\s/]+")


@dataclass
class RasaConfig:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    fallback_threshold: float = _DEFAULT_FALLBACK_THRESHOLD
    # the two best intents closer than this: nlu_fallback (FallbackClassifier's ambiguity_threshold)
    fallback_ambiguity: float = _DEFAULT_FALLBACK_AMBIGUITY
    pipeline: tuple[PipelineComponent, ...] = RASA_DEFAULT_FEATURIZERS  # no pipeline: Rasa's default's n-grams
    language: Located | None = None
    custom_components: tuple[str, ...] = ()  # the pipeline's own components by module path, which do not run
    model_entities_at: int = 0   # how many of ``pipeline`` come before the model's entities (its DIETClassifier)


def parse_config(path: Path | None, findings: Findings) -> RasaConfig:
    config = RasaConfig()
    if path is None:
        return config
    top = read_mapping(path, "config.yml", findings)
    if top is None:
        return config
    unsupported = {"importers": "custom training data importers; Switchboard reads the project's folders",
                   "data": "training data paths in config.yml; keep the data under data/",
                   "action_factory": "Rasa 1's action factory"}
    for key, value in top.items():
        if key not in _CONFIG_KEYS and key not in unsupported:
            # Rasa's schema for config.yml takes any key (``allowempty``) and reads only its own, so a project
            # Rasa trains may carry others (e.g. a session_config copied from the domain): noted, not refused.
            findings.note(value.key_where(), f"config.yml: '{key}' is not a config.yml key ({', '.join(_CONFIG_KEYS)}"
                                             "): not read, as Rasa does not read it")
    check_keys({k: v for k, v in top.items() if k in _CONFIG_KEYS or k in unsupported}, "config.yml", _CONFIG_KEYS,
               findings, unsupported)
    if "recipe" in top and top["recipe"].value not in ("default.v1", None):
        findings.unsupported(top["recipe"].key_where(), f"recipe {top['recipe'].value!r} (read as default.v1)")
    if "language" in top:
        lang = top["language"]
        if not isinstance(lang.value, str) or not lang.value.strip():
            findings.error(lang.key_where(), "'language' must be a language code, e.g. en")
        else:
            config.language = lang
    if "pipeline" in top and top["pipeline"].value is not None:
        language = config.language.value if config.language is not None else None
        custom: list[str] = []
        (config.pipeline, config.fallback_threshold, config.fallback_ambiguity,
         config.model_entities_at) = _pipeline(top["pipeline"], findings, language, custom)
        config.custom_components = tuple(custom)
    if "policies" in top and top["policies"].value is not None:
        config.policy = _policies(top["policies"], findings)
    return config


def _component(item: Located, what: str, findings: Findings) -> tuple[str, dict[str, Located]] | None:
    fields = as_mapping(item, f"a {what}", findings)
    if fields is None:
        return None
    if "name" not in fields:
        findings.error(item.key_where(), f"a {what} needs 'name'")
        return None
    name = name_of(fields["name"], f"the {what} name", findings)
    if name is None:
        return None
    return name, {k: v for k, v in fields.items() if k != "name"}


def _pipeline(item: Located, findings: Findings, language: str | None = None,
              custom: list[str] | None = None) -> tuple[tuple[PipelineComponent, ...], float, float, int]:
    kept: list[PipelineComponent] = []
    replaced: list[str] = []
    threshold = ambiguity = 0.0   # no FallbackClassifier in the pipeline: Rasa never predicts nlu_fallback
    model_at: int | None = None   # where the model's entities join (no entity extractor listed: first)
    for x in as_list(item, "'pipeline'", findings) or []:
        found = _component(x, "pipeline component", findings)
        if found is None:
            continue
        name, options = found
        if name in REPLACED_COMPONENTS:
            replaced.append(name)
            if name in MODEL_ENTITY_COMPONENTS and model_at is None:
                model_at = len(kept)
        elif name == "ResponseSelector":
            findings.note(x.key_where(), "ResponseSelector: its options are not read; the responses of retrieval "
                                         "intents (chitchat/ask_name), where the project has any, are picked by "
                                         "Switchboard's selector (the nearest NLU example by words and character "
                                         "n-grams)")
        elif name in RUN_COMPONENTS:
            if name == "FallbackClassifier":
                check_keys(options, name, ("threshold", "ambiguity_threshold"), findings)
                threshold, ambiguity = _DEFAULT_FALLBACK_THRESHOLD, _DEFAULT_FALLBACK_AMBIGUITY
                if "threshold" in options:
                    found_t = number(options["threshold"], f"{name}: 'threshold'", findings, low=0, high=1)
                    threshold = threshold if found_t is None else found_t
                if "ambiguity_threshold" in options:
                    found_a = number(options["ambiguity_threshold"], f"{name}: 'ambiguity_threshold'", findings,
                                     low=0, high=1)
                    ambiguity = ambiguity if found_a is None else found_a
            else:
                check_keys(options, name, _STEP_OPTIONS[name], findings,
                           COUNT_VECTORS_UNSUPPORTED if name == COUNT_VECTORS else None)
                known = {k: plain_json(v) for k, v in options.items() if k in _STEP_OPTIONS[name]}
                reason = check_component(name, known, language)
                if reason is not None:
                    findings.error(x.key_where(), reason)
                    continue
            kept.append(PipelineComponent(name, {k: plain_json(v) for k, v in options.items()}, x.key_where()))
        elif name in UNSUPPORTED_COMPONENTS:
            findings.unsupported(x.key_where(), f"{name} ({UNSUPPORTED_COMPONENTS[name]})")
        elif "." in name:
            findings.unsupported(x.key_where(), f"custom NLU component {name} (it does not run: Switchboard's own "
                                            f"NLU replaces the pipeline; its module is not imported, nor with the "
                                            f"actions package when it lives there)")
            if custom is not None:
                custom.append(name)
        else:
            findings.error(x.key_where(), f"unknown NLU component '{name}' (Rasa 3 has no such component)")
    if replaced:
        findings.note(item.key_where(), f"pipeline components {', '.join(dict.fromkeys(replaced))}: replaced by "
                                    f"Switchboard's NLU (its encoder with intent and entity heads, trained by "
                                    f"`switchboard train`); their options are not read")
    return tuple(kept), threshold, ambiguity, model_at or 0


def _policies(item: Located, findings: Findings) -> PolicyConfig:
    policy = PolicyConfig(memoization=False, augmented_memoization=False, rules=False, learned=False)
    memo_history: int | None = None
    for x in as_list(item, "'policies'", findings) or []:
        found = _component(x, "policy", findings)
        if found is None:
            continue
        name, options = found
        what = name
        priority = {"priority": "policies are combined by Switchboard's fixed precedence (rules, memoization, "
                                "learned)"}
        if name == "RulePolicy":
            check_keys(options, what, _RULE_OPTIONS, findings,
                       {**priority, "use_nlu_confidence_as_score": "rule predictions have confidence 1"})
            policy = replace(policy, rules=True)
            if "core_fallback_threshold" in options:
                t = number(options["core_fallback_threshold"], f"{what}: 'core_fallback_threshold'", findings,
                           low=0, high=1)
                if t is not None:
                    policy = replace(policy, core_fallback_threshold=t)
            if "core_fallback_action_name" in options:
                a = name_of(options["core_fallback_action_name"], f"{what}: 'core_fallback_action_name'", findings)
                if a is not None:
                    policy = replace(policy, core_fallback_action=a)
            flags: dict[str, Any] = {}
            for key in ("enable_fallback_prediction", "restrict_rules", "check_for_contradictions"):
                if key in options:
                    flag = boolean(options[key], f"{what}: '{key}'", findings)
                    if flag is not None:
                        flags[key] = flag
            policy = replace(policy, **flags)
        elif name in ("MemoizationPolicy", "AugmentedMemoizationPolicy"):
            check_keys(options, what, ("max_history",), findings,
                       {**priority, "use_nlu_confidence_as_score": "memoised predictions have confidence 1",
                        "enable_feature_string_compression": "an implementation detail of Rasa's lookup"})
            policy = replace(policy, memoization=True,
                             augmented_memoization=policy.augmented_memoization or name != "MemoizationPolicy")
            if "max_history" in options:
                memo_history = _history(options["max_history"], what, findings) or memo_history
        elif name == "TEDPolicy":
            policy = replace(policy, learned=True)
            others = [k for k in options if k not in ("max_history", "epochs")]
            if others:
                findings.note(x.key_where(), f"TEDPolicy: {', '.join(others)} not read (Switchboard's learned "
                                             f"policy has its own architecture; max_history and epochs are)")
            if "max_history" in options:
                history = _history(options["max_history"], what, findings)
                if history is not None:
                    policy = replace(policy, learned_max_history=history)
            if "epochs" in options:
                epochs = number(options["epochs"], f"{what}: 'epochs'", findings, low=1, high=100_000)
                if epochs is not None:
                    policy = replace(policy, learned_epochs=int(epochs))
        elif name == "UnexpecTEDIntentPolicy":
            findings.unsupported(x.key_where(), "UnexpecTEDIntentPolicy (action_unlikely_intent is never predicted)")
        elif name in RASA2_POLICIES:
            findings.error(x.key_where(), f"policy '{name}' is Rasa 2's: {RASA2_POLICIES[name]}")
        elif "." in name:
            findings.unsupported(x.key_where(), f"custom policy {name} (it does not run: Switchboard's ensemble is "
                                            f"{', '.join(KNOWN_POLICIES[:4])})")
        else:
            findings.error(x.key_where(), f"unknown policy '{name}' (Rasa 3 has {', '.join(KNOWN_POLICIES)})")
    if memo_history is not None:
        policy = replace(policy, max_history=memo_history)
    elif policy.learned_max_history is not None:
        policy = replace(policy, max_history=policy.learned_max_history)
    return policy


def _history(item: Located, what: str, findings: Findings) -> int | None:
    if item.value is None:
        findings.unsupported(item.key_where(), f"{what}: 'max_history: null' (the whole conversation): read as 20")
        return 20
    found = number(item, f"{what}: 'max_history'", findings, low=1, high=100)
    if found is not None and found != int(found):
        findings.error(item.key_where(), f"{what}: 'max_history' must be a whole number")
        return None
    return None if found is None else int(found)


# ---------------------------------------------------------------------------------------------------------
_STORE_NOTE = "Switchboard keeps conversations in its own store (SWITCHBOARD_MONGODB_URI, or embedded SQLite)"
_ENDPOINT_NOTES = {
    "tracker_store": _STORE_NOTE,
    "lock_store": "Switchboard orders each conversation's messages through its store's leases",
    "event_broker": "Switchboard's conversations are read through its admin API and review UI",
    "models": "Switchboard serves the newest artifact under BOT_DIR/models/",
    "model": "Switchboard serves the newest artifact under BOT_DIR/models/",
}


def parse_endpoints(path: Path | None, findings: Findings) -> ActionEndpoint | None:
    if path is None:
        return None
    top = read_mapping(path, "endpoints.yml", findings)
    if top is None:
        return None
    endpoint = None
    for key, item in top.items():
        if key == "action_endpoint":
            endpoint = _action_endpoint(item, findings)
        elif key in _ENDPOINT_NOTES:
            if item.value is not None:
                findings.note(item.key_where(), f"'{key}' not used: {_ENDPOINT_NOTES[key]}")
        elif key == "nlg":
            findings.unsupported(item.key_where(), "an NLG server (responses come from the domain)")
        else:
            findings.unsupported(item.key_where(), f"endpoint '{key}'")
    return endpoint


def _action_endpoint(item: Located, findings: Findings) -> ActionEndpoint | None:
    if item.value is None:
        return None
    fields = as_mapping(item, "'action_endpoint'", findings)
    if fields is None:
        return None
    check_keys(fields, "'action_endpoint'", ("url", "timeout"), findings,
               {"token": "authenticate the action server in front of it (e.g. a private network)",
                "token_name": "see 'token'", "headers": "request headers to the action server",
                "cafile": "a custom CA: install it in the system's trust store",
                "params": "query parameters to the action server",
                "basic_auth": "see 'token'"},
               ignored="Rasa's EndpointConfig keeps any other key and its action server call never uses it")
    if "url" not in fields:
        findings.error(item.key_where(), "'action_endpoint' needs 'url' (e.g. http://localhost:5055/webhook)")
        return None
    raw = fields["url"].value
    if not isinstance(raw, str):
        findings.error(fields["url"].key_where(), "'action_endpoint: url' must be text")
        return None
    url = expand_env(raw, fields["url"].key_where(), "'action_endpoint: url'", findings)
    if "${" not in url and not _URL.match(url):
        findings.error(fields["url"].key_where(), f"'action_endpoint: url' must be an http(s) URL, got {url!r}")
        return None
    timeout = DEFAULT_ACTION_TIMEOUT_S
    if "timeout" in fields:
        found = number(fields["timeout"], "'action_endpoint: timeout' (seconds)", findings, low=0.1, high=120)
        timeout = timeout if found is None else found
    return ActionEndpoint(url=url, timeout_s=timeout)


_CHANNELS = {"rest": "web", "socketio": "web", "slack": "slack", "telegram": "telegram"}
_SECRETS = {
    "slack": "SWITCHBOARD_SLACK_BOT_TOKEN and SWITCHBOARD_SLACK_SIGNING_SECRET",
    "telegram": "SWITCHBOARD_TELEGRAM_TOKEN and SWITCHBOARD_TELEGRAM_SECRET",
}


def parse_credentials(path: Path | None, findings: Findings) -> tuple[str, ...]:
    """The channels credentials.yml enables, as Switchboard's channel names (web when none)."""
    if path is None:
        return ("web",)
    top = read_mapping(path, "credentials.yml", findings)
    if top is None:
        return ("web",)
    channels: list[str] = []
    for key, item in top.items():
        if key in _CHANNELS:
            channels.append(_CHANNELS[key])
            settings: Any = plain_json(item)
            if key in _SECRETS and isinstance(settings, dict) and settings:
                findings.note(item.key_where(), f"{key}: its settings here are not read: Switchboard takes them from "
                                            f"{_SECRETS[key]} (secrets stay out of bot folders)")
            elif key == "socketio" and isinstance(settings, dict) and settings:
                findings.note(item.key_where(), "socketio: served by the web channel (its WebSocket widget); the "
                                            "socket.io event names are not read")
        elif key == "rasa":
            findings.note(item.key_where(), "'rasa' (Rasa X / Enterprise) not used")
        else:
            findings.unsupported(item.key_where(), f"channel '{key}' (Switchboard has web, slack and telegram)")
    return tuple(dict.fromkeys(channels)) or ("web",)


def rasa_files(directory: Path) -> dict[str, Path | None]:
    """Where a project laid out as ``rasa init`` makes it keeps its files (None: absent)."""
    def first(*names: str) -> Path | None:
        return next((directory / n for n in names if (directory / n).exists()), None)

    return {
        "config": first("config.yml", "config.yaml"),
        "domain": first("domain.yml", "domain.yaml", "domain"),
        "endpoints": first("endpoints.yml", "endpoints.yaml"),
        "credentials": first("credentials.yml", "credentials.yaml"),
        "data": first("data"),
        "actions": first("actions/__init__.py", "actions.py") or actions_namespace(directory / "actions"),
        "tests": first("tests"),
    }


def actions_namespace(folder: Path) -> Path | None:
    """``folder`` when it is a package without ``__init__.py`` holding Python modules (a namespace package),
    which ``python -m rasa_sdk --actions actions`` imports too (Python finds ``actions/__init__.py``, then
    ``actions.py``, then such a folder); None otherwise."""
    return folder if folder.is_dir() and not (folder / "__init__.py").exists() and any(folder.glob("*.py")) else None
