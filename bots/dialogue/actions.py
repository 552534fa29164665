"""Custom actions written with rasa-sdk, run unchanged: in this process or on an action server.

* ``actions: actions`` in bot.yml: the bot folder's ``actions.py`` (or ``actions/`` package, every
  module of it) is imported and its ``Action`` classes are registered with rasa-sdk's own ``ActionExecutor``,
  which runs them exactly as ``python -m rasa_sdk`` would.
* ``action_endpoint: URL``: the actions run on a rasa-sdk action server, spoken to with its webhook
  protocol (request: next_action, sender_id, tracker, domain, version; response: events and
  responses). As Rasa does: 400 = the action rejected the call, 404 = unknown action, 449 = the
  server needs the domain (sent again with it), 500 = the action crashed. Every call is bounded by
  ``timeout_s``.

With both, an action the module defines runs in process and every other one on the server; a module that
does not import in this process (its dependencies installed only where the action server runs) leaves
every action to the server, with a warning, as Rasa never imports the actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.machinery
import importlib.util
import inspect
import json
import logging
import os
import pkgutil
import sys
import traceback
from collections.abc import Awaitable, Coroutine, Generator, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx

from bots.botspec import BotSpec
from bots.dialogue.rasa_protocol import (
    RASA_VERSION,
    ActionFailed,
    ActionOutcome,
    ActionRejected,
    ActionRunner,
    domain_json,
)
from bots.dialogue.spec import DEFAULT_ACTION_TIMEOUT_S, ActionEndpoint, DialogueSpec
from bots.errors import ConfigError
from bots.types import JSON

if TYPE_CHECKING:  # rasa-sdk (Sanic and all) is imported only by bots that run actions in process
    from rasa_sdk.executor import ActionExecutor

log = logging.getLogger("switchboard.actions")


def _call(name: str, tracker: JSON) -> JSON:
    return {"next_action": name, "sender_id": tracker.get("sender_id", ""), "tracker": tracker,
            "version": RASA_VERSION}


def _outcome(name: str, body: Any) -> ActionOutcome:
    if body is None:
        return ActionOutcome()
    if not isinstance(body, dict):
        raise ActionFailed(name, f"answered {type(body).__name__}, expected an object with events and responses")
    events, responses = body.get("events") or [], body.get("responses") or []
    if not isinstance(events, list) or not isinstance(responses, list):
        raise ActionFailed(name, "'events' and 'responses' must be lists")
    return ActionOutcome(events=[e for e in events if isinstance(e, dict)],
                         responses=[r for r in responses if isinstance(r, dict)])


def _project_folder(path: Path) -> Path:
    """The folder Rasa's action server runs in: the one holding ``actions.py`` or the ``actions/`` package
    (``path`` its ``__init__.py``, or the package folder itself when it has none)."""
    return path.parent.parent if path.name == "__init__.py" else path.parent


def _origin(module: ModuleType) -> str | None:
    """Where a module was loaded from: its file, or a namespace package's (first) folder."""
    return getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", None) or []), None)


def _in_folder(filename: str | None, folder: Path) -> bool:
    return filename is not None and Path(filename).resolve().is_relative_to(folder)


@contextlib.contextmanager
def _project_importable(folder: Path) -> Iterator[None]:
    """The project folder importable, as for Rasa's action server: ``python -m rasa_sdk --actions actions``
    runs in it (the current folder is on ``sys.path``) and ``rasa run actions`` puts the current folder on
    ``sys.path``, so actions import the project's own top-level modules (``from config import API_KEY``,
    ``import database``) and the package by its own name (``from actions.helpers import x``).

    While the actions are imported the folder comes first, so its modules are the ones found, as in Rasa
    (imported afresh: a module of that name another bot folder loaded, or this one before a reload); afterwards it
    stays at the end of ``sys.path``, for the imports an action makes when it runs, without shadowing
    installed packages."""
    entry = str(folder)
    own = {p.stem for p in folder.glob("*.py")} | {p.parent.name for p in folder.glob("*/*.py")}
    for name in own & set(sys.modules):  # imported afresh: a reload sees edited modules, a bot its own ones
        origin = _origin(sys.modules[name])
        if any(_in_folder(origin, Path(other)) for other in {*_PROJECT_FOLDERS, str(folder)}):
            for loaded in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
                del sys.modules[loaded]
    _PROJECT_FOLDERS.add(entry)
    while entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        while entry in sys.path:
            sys.path.remove(entry)
        sys.path.append(entry)


_PROJECT_FOLDERS: set[str] = set()  # the bot folders made importable in this process


def _import_module(path: Path, bot: str, skip: tuple[str, ...] = ()) -> ModuleType:
    """Import the bot's actions module under a name of its own (two bots may both have actions.py), its
    project folder importable (``_project_importable``). ``path`` is ``actions.py``, a package's
    ``__init__.py``, or a package folder without one (a namespace package, as rasa-sdk imports it too).
    ``skip``: modules by their project name (``actions.my_classifier``) not to import, config.yml's own NLU
    components: they run inside Rasa's server (they import ``rasa``), and Switchboard's NLU replaces them."""
    namespace = path.is_dir()
    package = namespace or path.name == "__init__.py"
    folder = path if namespace else path.parent
    name = f"switchboard_actions_{bot.replace('-', '_').replace('.', '_')}_{folder.name if package else path.stem}"
    found = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(folder)] if package else None) if not namespace else None
    if namespace:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(path)]
    elif found is None or found.loader is None:
        raise ConfigError(f"{path}: cannot be imported as a Python module")
    else:
        spec = found
    module = importlib.util.module_from_spec(spec)
    _forget_modules(name)  # a reload (a newer model swapped in) imports the package's modules afresh
    sys.modules[name] = module
    project = _project_folder(path).resolve()
    try:
        # in the project folder as working directory, as Rasa's action server imports the actions in the folder
        # it runs in: a module may read the project's files at import (``open("teacher.json")``)
        with _project_importable(project), _working_folder(project):
            if namespace:  # its own name too: a namespace package loses to a module of that name anywhere on
                # sys.path (another bot folder's actions.py), and rasa-sdk's server has only this folder there
                own = importlib.machinery.ModuleSpec(folder.name, None, is_package=True)
                own.submodule_search_locations = [str(path)]
                sys.modules[folder.name] = importlib.util.module_from_spec(own)
            if spec.loader is not None:
                spec.loader.exec_module(module)
            if package:
                _import_submodules(module, {m.removeprefix(f"{folder.name}.") for m in skip
                                            if m.startswith(f"{folder.name}.")})
    except Exception as exc:  # noqa: BLE001 - any error in the user's module becomes a config error
        _forget_modules(name)
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).is_relative_to(folder)]
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else str(path)
        raise ConfigError(f"{where}: importing the actions module failed: {type(exc).__name__}: {exc}") from None
    return module


def _import_submodules(package: ModuleType, skip: set[str], root: str = "") -> None:
    """Every module of the package, sub-packages included, as rasa-sdk's ``ActionExecutor.register_package``
    imports them for ``python -m rasa_sdk --actions actions``: the Action classes of a ``rasa init``
    project live in ``actions/actions.py``, not in the package's ``__init__.py``. ``skip``: modules (by
    their name inside the package, ``my_classifier``) not imported."""
    root = root or package.__name__
    for info in pkgutil.iter_modules(package.__path__, prefix=f"{package.__name__}."):
        if info.name.removeprefix(f"{root}.") in skip:
            log.info("not imported with the actions: config.yml names it as an NLU component",
                     extra={"module": info.name.removeprefix(f"{root}.")})
            continue
        module = importlib.import_module(info.name)
        if info.ispkg:
            _import_submodules(module, skip, root)


def _forget_modules(name: str) -> None:
    for loaded in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[loaded]


def _class_source(cls: type) -> tuple[str | None, str]:
    """A class by the file that defines it and its name there: the same class for two imports of one module
    (its methods' code tells the file: the module of the first import may have left ``sys.modules`` since)."""
    for member in vars(cls).values():
        code = getattr(inspect.unwrap(member), "__code__", None) if callable(member) else None
        if code is not None:
            return code.co_filename, cls.__qualname__
    return getattr(sys.modules.get(cls.__module__), "__file__", None), cls.__qualname__


@contextlib.contextmanager
def _working_folder(folder: Path) -> Iterator[None]:
    """``folder`` as the process's working directory, the previous one given back after (none to give back
    when it was removed)."""
    try:
        previous: str | None = os.getcwd()
    except OSError:  # the process's working directory was removed: nothing to give back
        previous = None
    os.chdir(folder)
    try:
        yield
    finally:
        if previous is not None:
            with contextlib.suppress(OSError):
                os.chdir(previous)


class _InFolder(Awaitable[Any]):
    """A coroutine run with the working directory set to ``folder`` during each of its steps, and given back
    between them: the action sees the folder Rasa's action server runs in (``open('./files/x.json')`` reads
    the project's file), while the other coroutines of the event loop, which run between its steps, keep the
    process's own. The working directory is the process's: a worker thread that resolves a relative path while
    a step runs would see the project folder too, so Switchboard's own paths are absolute (``Settings.data_dir``,
    ``serve``'s bot folders)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], folder: Path) -> None:
        self._coro = coro
        self._folder = folder

    def __await__(self) -> Generator[Any, Any, Any]:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                with _working_folder(self._folder):
                    yielded = self._coro.throw(error) if error is not None else self._coro.send(value)
            except StopIteration as stop:
                return stop.value
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # noqa: BLE001 - thrown in (a cancellation): the action's to handle
                value, error = None, exc


class InProcessActions:
    """rasa-sdk actions from the bot's own module, run by rasa-sdk's ``ActionExecutor`` in this process, in the
    project folder (``folder``) as working directory, as Rasa's action server runs in it (``_InFolder``)."""

    def __init__(self, executor: ActionExecutor, domain: JSON, timeout_s: float = DEFAULT_ACTION_TIMEOUT_S,
                 folder: Path | None = None) -> None:
        self.executor = executor
        self.domain = domain
        self.timeout_s = timeout_s
        self.folder = folder

    @staticmethod
    def executor_for(module: ModuleType) -> ActionExecutor:
        """Register the ``Action`` classes the module (or package) defines, as the action server would."""
        from rasa_sdk.executor import ActionExecutor
        from rasa_sdk.interfaces import Action
        from rasa_sdk.utils import all_subclasses

        executor = ActionExecutor()
        prefix = module.__name__
        origin = _origin(module)
        folder = _project_folder(Path(origin)).resolve() if origin else None
        classes = {cls for mod_name, mod in list(sys.modules.items())
                   if mod_name == prefix or mod_name.startswith(prefix + ".")
                   for _, cls in inspect.getmembers(mod, inspect.isclass)}
        # In rasa-sdk's order (``_register_all_actions``: ``utils.all_subclasses(Action)``, Action's subclasses in
        # the order Python created them, then theirs), so that when two classes give the same action name (one in a
        # module the package's ``__init__`` imports, one in ``actions/actions.py``) the one rasa-sdk registers last
        # is the one that runs. A project module is imported here twice, under the package's own name and under
        # Switchboard's (``_import_module``), where rasa-sdk imports it once: a class takes the place of its first
        # copy, as the module's classes are created when rasa-sdk first imports it.
        order: dict[tuple[str | None, str], int] = {}
        for i, cls in enumerate(all_subclasses(Action)):
            order.setdefault(_class_source(cls), i)
        for cls in sorted(classes, key=lambda c: (order.get(_class_source(c), len(order)), c.__qualname__,
                                                  c.__module__)):
            # the module's own classes, and those it imports from the project folder by their absolute
            # name (``from actions.forms import ValidateX``), as rasa-sdk registers every Action subclass
            own = cls.__module__ == prefix or cls.__module__.startswith(prefix + ".") or (
                folder is not None and _in_folder(getattr(sys.modules.get(cls.__module__), "__file__", None), folder))
            if own and issubclass(cls, Action) and not inspect.isabstract(cls):
                executor.register_action(cls)
        return executor

    def names(self) -> set[str]:
        return set(self.executor.actions)

    async def run(self, name: str, tracker: JSON) -> ActionOutcome:
        from rasa_sdk.interfaces import ActionExecutionRejection, ActionNotFoundException

        call = {**_call(name, tracker), "domain": self.domain}
        try:
            running = self.executor.run(call)
            result = await asyncio.wait_for(running if self.folder is None else _InFolder(running, self.folder),
                                            timeout=self.timeout_s)
        except ActionExecutionRejection as exc:
            raise ActionRejected(name, exc.message) from None
        except ActionNotFoundException:
            raise ActionFailed(name, "no such action in the actions module") from None
        except TimeoutError:
            raise ActionFailed(name, f"no result within {self.timeout_s:g}s") from None
        except Exception as exc:
            log.exception("custom action raised", extra={"action": name})
            raise ActionFailed(name, f"raised {type(exc).__name__}: {exc}") from None
        return _outcome(name, None if result is None else result.model_dump())

    async def aclose(self) -> None:
        return None


class RemoteActions:
    """Actions on a rasa-sdk action server (``python -m rasa_sdk``), over its webhook protocol."""

    def __init__(self, endpoint: ActionEndpoint, domain: JSON, *, client: httpx.AsyncClient | None = None) -> None:
        self.endpoint = endpoint
        self.domain = domain
        self.digest = hashlib.sha256(json.dumps(domain, sort_keys=True).encode()).hexdigest()
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(endpoint.timeout_s))
        self._domain_sent = False

    def names(self) -> set[str] | None:
        return None

    async def _post(self, name: str, body: JSON) -> httpx.Response:
        try:
            return await self._client.post(self.endpoint.url, json=body, timeout=self.endpoint.timeout_s)
        except httpx.TimeoutException:
            raise ActionFailed(name, f"the action server did not answer within {self.endpoint.timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            raise ActionFailed(name, f"the action server at {self.endpoint.url} is unreachable ({exc})") from None

    async def run(self, name: str, tracker: JSON) -> ActionOutcome:
        body = {**_call(name, tracker), "domain_digest": self.digest}
        if not self._domain_sent:
            body["domain"] = self.domain
        response = await self._post(name, body)
        if response.status_code == 449:  # the server has not seen this domain: send it (as Rasa does)
            response = await self._post(name, {**body, "domain": self.domain})
        if response.status_code == 200:
            self._domain_sent = True
            try:
                return _outcome(name, response.json())
            except ValueError:
                raise ActionFailed(name, "the action server answered with invalid JSON") from None
        error = _error_text(response)
        if response.status_code == 400:
            raise ActionRejected(name, error)
        if response.status_code == 404:
            raise ActionFailed(name, f"the action server has no such action ({error})")
        raise ActionFailed(name, f"the action server answered HTTP {response.status_code}: {error}")

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("error", body))[:200] if isinstance(body, dict) else str(body)[:200]


class CombinedActions:
    """The module's actions in process, the rest on the action server."""

    def __init__(self, local: InProcessActions, remote: RemoteActions) -> None:
        self.local, self.remote = local, remote

    def names(self) -> set[str] | None:
        return None

    async def run(self, name: str, tracker: JSON) -> ActionOutcome:
        runner: ActionRunner = self.local if name in self.local.names() else self.remote
        return await runner.run(name, tracker)

    async def aclose(self) -> None:
        await self.remote.aclose()


def _runnable_actions(dialogue: DialogueSpec) -> set[str]:
    """The custom actions the dialogue itself can run: named in a story or rule, a form's validation
    action or question (``validate_<form>``, ``action_ask_<slot>``), the core fallback action, bot.yml's
    rules and forms. An action the domain only declares runs only if another action's ``FollowupAction``
    names it."""
    runnable = {step.name for story in dialogue.stories for step in story.steps
                if step.kind == "action" and step.name}
    runnable |= {f"validate_{name}" for name in dialogue.domain.forms}
    runnable |= {name for name in dialogue.domain.actions if name.startswith("action_ask_")}
    runnable.add(dialogue.policy.core_fallback_action)
    runnable |= {name for name in dialogue.domain.actions if dialogue.domain.overrides(name)}  # run when Rasa's would
    runnable |= {rule.action for rule in dialogue.rules.values() if rule.action}
    for form in dialogue.forms.values():
        runnable |= {a for a in (form.validation_action, form.submit_action) if a}
    return runnable


def _missing_actions(dialogue: DialogueSpec, names: set[str]) -> tuple[list[str], list[str]]:
    """Errors for the actions the dialogue runs that the module does not define; warnings for the ones
    the domain merely declares (Rasa trains and serves such a bot: the action would fail only when run)."""
    defined = f"{dialogue.actions_module} defines {', '.join(sorted(names)) or 'no Action classes'}"
    runnable = _runnable_actions(dialogue)
    errors: list[str] = []
    warnings: list[str] = []
    for name, where in dialogue.action_refs:
        if name in names:
            continue
        if name in runnable:
            errors.append(f"{where}: unknown action {name!r} ({defined})")
        else:
            warnings.append(f"{where}: action {name!r} is declared but not defined ({defined}); no story, rule or "
                            f"form runs it, so it is never run (define it, or remove it from the domain)")
    return errors, warnings


def _local_actions(bot: BotSpec, dialogue: DialogueSpec) -> tuple[InProcessActions | None, set[str], list[str]]:
    """The actions module imported (its errors a ConfigError at file:line) with the names it defines and
    warnings; without an action server every action the dialogue runs must be one of them."""
    local, names, errors, warnings = _local_actions_found(bot, dialogue)
    if errors:
        raise ConfigError(errors)
    return local, names, warnings


def _local_actions_found(bot: BotSpec, dialogue: DialogueSpec
                         ) -> tuple[InProcessActions | None, set[str], list[str], list[str]]:
    """``_local_actions`` with the missing actions' errors returned beside the warnings, not raised: a check
    reports both (an action the dialogue runs and one it only declares)."""
    if dialogue.actions_module is None:
        return None, set(), [], []
    try:
        module = _import_module(dialogue.actions_module, bot.name, dialogue.component_modules)
    except ConfigError as exc:
        if dialogue.action_endpoint is None:
            raise
        # A Rasa server never imports its actions: the action server runs them, in a process (often an image)
        # of its own with the actions' dependencies. With one, a package that does not import here leaves
        # every action to it, as Rasa does.
        return None, set(), [], [f"{problem}; every custom action runs on the action server (endpoints.yml: "
                                 f"action_endpoint), as Rasa runs them" for problem in exc.problems]
    executor = InProcessActions.executor_for(module)
    names = set(executor.actions)
    local = InProcessActions(executor, domain_json(bot, dialogue, sorted(names)), dialogue.actions_timeout_s,
                             folder=_project_folder(Path(dialogue.actions_module)).resolve())
    if dialogue.action_endpoint is None:
        errors, warnings = _missing_actions(dialogue, names)
        return local, names, errors, warnings
    return local, names, [], []


def check_actions(bot: BotSpec, dialogue: DialogueSpec) -> list[str]:
    """What ``load_actions`` checks, without a client for the action server: for start-up validation and
    ``switchboard check``. Raises a ConfigError for the errors; returns the warnings."""
    return _local_actions(bot, dialogue)[2]


def action_findings(bot: BotSpec, dialogue: DialogueSpec) -> tuple[list[str], list[str]]:
    """``check_actions``' errors and warnings, both returned (``switchboard check`` lists both): the warnings of
    actions only declared are not lost when an action the dialogue runs is missing. The actions module's own
    import errors still raise a ConfigError."""
    return _local_actions_found(bot, dialogue)[2:]


def load_actions(bot: BotSpec, dialogue: DialogueSpec) -> ActionRunner | None:
    """The bot's action runner, or ``None`` without actions; unknown action names are a ConfigError."""
    local, names, warnings = _local_actions(bot, dialogue)
    for warning in warnings:
        log.warning("bot check: %s", warning, extra={"bot": bot.name})
    if dialogue.action_endpoint is None:
        return local
    all_names = sorted(names | {name for name, _ in dialogue.action_refs})
    remote = RemoteActions(dialogue.action_endpoint, domain_json(bot, dialogue, all_names))
    return remote if local is None else CombinedActions(local, remote)
