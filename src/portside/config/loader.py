"""Turns a YAML config file and the environment into Settings, the classic docker-registry way.

Owns the choice of file and flavor, `_env:` values, config error messages and the printable forms.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection, Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from portside.config import classic
from portside.config.settings import Settings

CONFIG_ENV = "DOCKER_REGISTRY_CONFIG"
FLAVOR_ENV = "SETTINGS_FLAVOR"
DEFAULT_FLAVOR = "dev"

_PACKAGE = "portside.config"
_BUILTIN_SOURCE = "(built-in default.yml)"
_ENV_PREFIX = "_env:"
_SECRET_WORDS = ("password", "secret", "key", "token", "authorization")

KeyPath = tuple[object, ...]


class ConfigError(Exception):
    """A config that cannot be loaded; str() names the file, the flavor and every problem found."""

    def __init__(self, source: str, flavor: str, problems: list[str]) -> None:
        self.source = source
        self.flavor = flavor
        self.problems = problems
        super().__init__(f"config {source}, flavor {flavor}: {'; '.join(problems)}")


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    flavor: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    warnings: list[str] | None = None,
) -> Settings:
    """Load one flavor of a config file, resolve its `_env:` values, apply overrides, validate.

    The file is `config_file`, else $DOCKER_REGISTRY_CONFIG, else the built-in default.yml; the
    flavor is `flavor`, else $SETTINGS_FLAVOR, else `dev` (empty values count as unset). The
    file's top-level keys are flavors and the chosen one must exist: `common` is not used on
    its own, flavors share it through YAML merge keys (`<<: *common`).

    A string value `_env:NAME` or `_env:NAME:default` (the default may contain colons) is
    replaced by the environment variable NAME, else the default, else null (as the classic
    registry did). The text is read as YAML when it is a scalar or a flow list or mapping, so
    `false`, `8`, `[Content-Type]` or an empty text become a boolean, a number, a list or null,
    unless the key needs a string: then the text stays as written.

    The classic registry's own keys are translated (config/classic.py); what they say that
    Portside does not do is appended to `warnings`, one line each, when a list is given.

    A key whose value is null keeps its default, as in the classic registry. `overrides` (say,
    from command-line flags) replace keys of the flavor last; a None override is ignored.
    `environ` defaults to os.environ and is the only place the environment is read.

    Raises ConfigError listing every problem found.
    """
    env = os.environ if environ is None else environ
    name = flavor or env.get(FLAVOR_ENV) or DEFAULT_FLAVOR
    flavor_hint = f", named by {FLAVOR_ENV}," if not flavor and env.get(FLAVOR_ENV) else ""
    file_hint = ""
    if config_file is None and env.get(CONFIG_ENV):
        config_file = env[CONFIG_ENV]
        file_hint = f" named by {CONFIG_ENV}"
    source = _BUILTIN_SOURCE if config_file is None else os.fspath(config_file)

    def fail(*problems: str) -> ConfigError:
        return ConfigError(source, name, list(problems))

    if config_file is None:
        text = resources.files(_PACKAGE).joinpath("default.yml").read_bytes()
    else:
        try:
            text = Path(config_file).read_bytes()
        except OSError as exc:
            raise fail(f"cannot read the file{file_hint}: {exc.strerror or exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise fail(_yaml_problem(exc)) from exc

    if not isinstance(document, dict):
        raise fail(f"the file should map flavor names to settings, it holds {_kind(document)}")
    if name not in document:
        flavors = ", ".join(str(key) for key in document)
        raise fail(f"no flavor {name!r}{flavor_hint} in the file; it has: {flavors}")
    section = document[name]
    if not isinstance(section, dict):
        raise fail(f"the flavor should map keys to values, it holds {_kind(section)}")

    problems: list[tuple[KeyPath, str]] = []
    raw_texts: dict[KeyPath, str] = {}
    messages: list[str] = []
    resolved = _resolve_env(section, (), env, raw_texts, problems)
    try:
        translated = classic.translate(resolved, [] if warnings is None else warnings, messages)
    except classic.UnsupportedStorage as exc:
        raise fail(str(exc)) from None
    values = {key: value for key, value in translated.items() if value is not None}
    overridden = {key for key, value in (overrides or {}).items() if value is not None}
    values.update({key: value for key, value in (overrides or {}).items() if key in overridden})

    messages += [f"key {_key_path(path)}: {message}" for path, message in problems]
    unresolved = {path[0] for path, _ in problems}
    for key in values:
        if not isinstance(key, str) or key not in Settings.model_fields:
            origin = " (from overrides)" if key in overridden else ""
            messages.append(f"key {key}{origin}: unknown key{_did_you_mean(key)}")
            unresolved.add(key)
    known = {key: value for key, value in values.items() if key not in unresolved}
    texts = {path: text for path, text in raw_texts.items() if path[0] not in overridden}
    try:
        settings = _validate(known, texts)
    except ValidationError as exc:
        messages += [_validation_problem(error, overridden) for error in exc.errors()]
    if messages:
        raise fail(*messages)
    return settings


def describe(settings: Settings) -> str:
    """The settings as YAML, with the values of secret-looking keys and URL passwords masked."""
    masked = _mask(settings.model_dump(mode="json"))
    return yaml.safe_dump(masked, sort_keys=False, allow_unicode=True, default_flow_style=False)


def sample_config() -> str:
    """The documented sample config: every key with its meaning, in common/dev/prod/test flavors."""
    return resources.files(_PACKAGE).joinpath("sample.yml").read_text(encoding="utf-8")


def _resolve_env(
    value: object,
    path: KeyPath,
    environ: Mapping[str, str],
    raw_texts: dict[KeyPath, str],
    problems: list[tuple[KeyPath, str]],
) -> Any:
    """A copy of `value` with `_env:` strings replaced; notes the texts read as non-strings."""
    if isinstance(value, dict):
        return {
            k: _resolve_env(v, (*path, k), environ, raw_texts, problems) for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _resolve_env(v, (*path, i), environ, raw_texts, problems) for i, v in enumerate(value)
        ]
    if not isinstance(value, str) or not value.startswith(_ENV_PREFIX):
        return value
    name, has_default, default = value.removeprefix(_ENV_PREFIX).partition(":")
    if not name:
        problems.append((path, f"{value!r} names no environment variable"))
        return None
    text = environ.get(name, default if has_default else None)
    if text is None:  # unset and no default: null, the key's default, as in the classic registry
        return None
    parsed = _yaml_value(text)
    if parsed is not text:
        raw_texts[path] = text
    return parsed


def _yaml_value(text: str) -> object:
    """`text` read as YAML if it is a null, boolean or number, or a flow list or mapping such
    as `[Content-Type]` (the classic registry read every value as YAML); otherwise `text`.

    Other strings stay verbatim so that quotes, `#` or `: ` inside a password are not YAML
    syntax; a list where a string is wanted goes back to its text too (see _validate).
    """
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(parsed, list | dict):
        return parsed if text.lstrip().startswith(("[", "{")) else text
    return parsed if parsed is None or isinstance(parsed, bool | int | float) else text


def _validate(values: dict[Any, object], raw_texts: dict[KeyPath, str]) -> Settings:
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        failed = [tuple(error["loc"]) for error in exc.errors()]
        # `_env:ISSUE:42` read as a number fails where a string is wanted: retry with the text.
        retry = [p for p in raw_texts if any(loc[: len(p)] == p for loc in failed)]
        if not retry:
            raise
        for path in retry:
            container: Any = values
            for part in path[:-1]:
                container = container[part]
            container[path[-1]] = raw_texts[path]
        return Settings.model_validate(values)


def _validation_problem(error: ErrorDetails, overridden: Collection[str]) -> str:
    loc = tuple(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    given = error["input"]
    # Value errors of Settings' own validators already quote the input.
    if error["type"] != "value_error" and not isinstance(given, dict | list):
        secret = any(_is_secret(part) for part in loc)
        message += f" (got {'***' if secret else _mask(given)!r})"
    if not loc:  # a check across keys, by a model validator
        return message
    origin = " (from overrides)" if loc[0] in overridden else ""
    return f"key {_key_path(loc)}{origin}: {message}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or exc.context or "invalid YAML"
        return f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return "YAML syntax error: " + " ".join(str(exc).split())


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    return kinds.get(type(value), "a number" if isinstance(value, int | float) else "a value")


def _key_path(path: KeyPath) -> str:
    return "".join(
        f"[{part}]" if isinstance(part, int) else f"{'.' if i else ''}{part}"
        for i, part in enumerate(path)
    )


def _did_you_mean(key: object) -> str:
    known = [*Settings.model_fields, *classic.ACCEPTED]
    close = difflib.get_close_matches(str(key), known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _is_secret(name: object) -> bool:
    if not isinstance(name, str) or name.endswith("_path"):  # a file's name is no secret
        return False
    return any(word in name.lower() for word in _SECRET_WORDS)


def _mask(value: object, secret: bool = False) -> object:
    # A section under a secret-sounding name (auth.token) is masked key by key, not whole.
    if secret and value is not None and value != "" and not isinstance(value, dict):
        return "***"
    if isinstance(value, dict):
        return {k: _mask(v, _is_secret(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return _mask_url_password(value)
    return value


def _mask_url_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hostinfo}").geturl()
