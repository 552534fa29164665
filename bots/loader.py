"""The one place a bot folder is loaded, whatever its front door: ``load_bot_folder(DIR)``.

* ``DIR/bot.yml`` (our native format, bots/botspec.py + bots/dialogue/spec.py);
* a Rasa 3.x project as ``rasa init`` lays it out (no bot.yml; ``domain.yml`` or ``domain/``,
  ``config.yml``, ``data/``, ...: bots/dialogue/rasa_project.py);
* a bot.yml that points at Rasa files:

```yaml
name: support
channels: [web, slack]          # bot.yml's own settings win: name, channels, fallback_threshold, pii, ...
rasa: .                         # a Rasa project folder (relative to the bot folder), or its files one by one:
# rasa:
#   domain: domain.yml          # a file or a folder (several: a list)
#   data: [data/]               # files or folders (default: data/ when present)
#   config: config.yml          # default: config.yml when present
#   endpoints: endpoints.yml    # default: endpoints.yml when present
#   actions: actions            # a module in the bot folder (default: actions/ or actions.py when present)
```

With ``rasa:``, the intents and the dialogue come from the Rasa files, so bot.yml's ``intents``,
``synonyms``, ``slots``, ``forms``, ``rules``, ``actions``, ``action_endpoint`` and
``session_expiry_minutes`` are refused there (one source for each thing); bot.yml keeps what is
Switchboard's own (``answers``, ``knowledge_base``, ``pii``, ``retention_days``, ``training``, ...).
Every caller (runtime, ``switchboard train``/``evaluate``/``serve``/``check``) loads through here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bots.botspec import BotSpec, parse_bot
from bots.dialogue.rasa_config import actions_namespace, rasa_files
from bots.dialogue.rasa_project import RasaPaths, is_rasa_project, rasa_test_files, read_rasa_paths
from bots.dialogue.rasa_yaml import Findings
from bots.dialogue.spec import DialogueSpec, parse_dialogue, parse_handoff
from bots.errors import ConfigError
from bots.yamlspan import Located, load_located

# bot.yml sections that the Rasa files own when bot.yml says `rasa:`.
RASA_OWNED = ("intents", "synonyms", "slots", "forms", "rules", "actions", "action_endpoint",
              "session_expiry_minutes")
_RASA_KEYS = ("domain", "data", "config", "endpoints", "actions")


def is_bot_folder(directory: Path) -> bool:
    return (directory / "bot.yml").is_file() or (directory.is_dir() and is_rasa_project(directory))


def load_bot_folder(directory: Path | str) -> tuple[BotSpec, DialogueSpec]:
    """The bot in ``directory`` (bot.yml, a Rasa project, or bot.yml pointing at Rasa files);
    ConfigError listing every problem as ``file:line: reason``."""
    findings = Findings()
    loaded = read_bot_folder(directory, findings)
    findings.raise_errors()
    assert loaded is not None
    return loaded


def read_bot_folder(directory: Path | str, findings: Findings) -> tuple[BotSpec, DialogueSpec] | None:
    """``load_bot_folder`` without raising: problems and notes go to ``findings``; None when nothing
    could be built (``switchboard check`` reports notes along with the errors)."""
    directory = Path(directory)
    if not directory.is_dir():
        findings.error(str(directory), "not a bot folder (no such folder)")
        return None
    bot_file = directory / "bot.yml"
    if bot_file.is_file():
        try:
            root = load_located(bot_file, yaml12=True)  # YAML 1.2 scalars: `yes:` is an intent, not True
        except ConfigError as exc:
            findings.errors.extend(exc.problems)
            return None
        if isinstance(root.value, dict) and "rasa" in root.value:
            return _bot_yml_with_rasa(directory, root, findings)
        try:
            spec = parse_bot(root, directory)
            return spec, parse_dialogue(spec)
        except ConfigError as exc:
            findings.errors.extend(exc.problems)
            return None
    if is_rasa_project(directory):
        return read_rasa_paths(directory, RasaPaths.of_folder(directory), findings)
    findings.error(str(directory), "not a bot folder: expected bot.yml, or a Rasa project (domain.yml and "
                                   "config.yml, as `rasa init` makes them)")
    return None


def _bot_yml_with_rasa(directory: Path, root: Located, findings: Findings) -> tuple[BotSpec, DialogueSpec] | None:
    top: dict[str, Located] = root.value
    for key in RASA_OWNED:
        if key in top:
            findings.error(top[key].key_where(), f"'{key}' comes from the Rasa files 'rasa:' points at: keep it there "
                                             f"(bot.yml may not say it twice)")
    try:
        own = parse_bot(root, directory)
    except ConfigError as exc:
        findings.errors.extend(exc.problems)
        own = None
    paths = _rasa_paths(directory, top["rasa"], findings)  # checked too, so that every problem shows at once
    if paths is None or own is None:
        return None
    channels = own.channels if "channels" in top else None
    spec, dialogue = read_rasa_paths(directory, paths, findings, name=own.name, channels=channels,
                                     config_required=False)
    if "handoff" in top:  # Switchboard's own (the hand-off texts, the satisfaction question): kept from bot.yml
        try:
            dialogue = replace(dialogue, handoff=parse_handoff(top["handoff"]))
        except ConfigError as exc:
            findings.errors.extend(exc.problems)
            return None
    sections = {**spec.sections, **{k: v for k, v in own.sections.items() if k != "rasa"}}
    spec = replace(spec, description=own.description or spec.description, sections=sections, source="bot.yml",
                   fallback_threshold=own.fallback_threshold if "fallback_threshold" in top
                   else spec.fallback_threshold)
    return spec, dialogue


def _inside(directory: Path, item: Located, findings: Findings, *, folder_ok: bool = True) -> Path | None:
    if not isinstance(item.value, str) or not item.value.strip():
        findings.error(item.key_where(), "'rasa:' paths are text, relative to the bot folder")
        return None
    path = (directory / item.value.strip()).resolve()
    if not path.exists():
        findings.error(item.key_where(), f"{item.value} does not exist in {directory}")
        return None
    if path.is_dir() and not folder_ok:
        findings.error(item.key_where(), f"{item.value} is a folder; a file is expected here")
        return None
    return path


def _rasa_paths(directory: Path, item: Located, findings: Findings) -> RasaPaths | None:
    if isinstance(item.value, str):  # rasa: path/to/project
        folder = _inside(directory, item, findings)
        if folder is None:
            return None
        if not folder.is_dir():
            findings.error(item.key_where(), "'rasa:' names a Rasa project folder, or maps domain/data/config/... to "
                                         "its files")
            return None
        return RasaPaths.of_folder(folder)
    if not isinstance(item.value, dict):
        findings.error(item.key_where(), "'rasa:' names a Rasa project folder, or maps domain/data/config/... to files")
        return None
    fields: dict[str, Located] = item.value
    for key, value in fields.items():
        if key not in _RASA_KEYS:
            findings.error(value.key_where(), f"'rasa:': unknown key '{key}' (known: {', '.join(_RASA_KEYS)})")
    defaults = rasa_files(directory)

    def several(key: str) -> tuple[Path, ...] | None:
        if key not in fields:
            found = defaults[key]
            return (found,) if found is not None else ()
        raw = fields[key].value if isinstance(fields[key].value, list) else [fields[key]]
        out = [_inside(directory, x, findings) for x in raw]
        return None if any(p is None for p in out) else tuple(p for p in out if p is not None)

    def one(key: str) -> Path | None:
        if key not in fields:
            return defaults[key]
        return _inside(directory, fields[key], findings, folder_ok=False)

    domain, data = several("domain"), several("data")
    actions = defaults["actions"]
    if "actions" in fields:
        a = fields["actions"]
        module = str(a.value).strip() if isinstance(a.value, str) else ""
        relative = Path(*module.split(".")) if module else Path()
        candidates = [directory / relative.with_suffix(".py"), directory / relative / "__init__.py"] if module else []
        actions = next((c for c in candidates if c.is_file()), None) or (
            actions_namespace(directory / relative) if module else None)
        if actions is None:
            findings.error(a.key_where(), f"'rasa: actions' must name a Python module in the bot folder (neither "
                                      f"{relative.with_suffix('.py')} nor {relative}/__init__.py nor a {relative}/ "
                                      f"folder of modules exists)")
    config, endpoints = one("config"), one("endpoints")
    if domain is None or data is None:
        return None
    return RasaPaths(domain=domain, data=data, config=config, endpoints=endpoints,
                     credentials=None, actions=actions, tests=tuple(rasa_test_files(directory)))
