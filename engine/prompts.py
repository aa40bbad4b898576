"""Built-in system prompts: lookup of pre-generated WAV files by BCP 47 language tag.

The prompts live in ``prompts/<tag>/<name>.wav`` (8 kHz mono 16-bit PCM), described by
``prompts/manifest.json`` and rebuilt by ``prompts/generate``; no synthesiser is needed at
run time.

Language resolution (:meth:`PromptLibrary.resolve_language`), with tags normalised by
``langcodes.standardize_tag(tag, macro=True)`` (case, ``_`` separators, deprecated codes
such as ``iw``, individual languages folded into their macrolanguage such as ``cmn`` ->
``zh``):

1. exact match of the standardised tag (``EN-us`` -> ``en-US``);
2. a shipped language with the same language subtag, ranked by: same script and region
   once both tags are expanded with likely subtags (``de`` -> ``de-Latn-DE`` matches
   ``de-DE``); same script; smallest ``langcodes.tag_distance``; the language's most likely
   region (``de-AT`` -> ``de-DE`` rather than ``de-CH``). A different script is only
   accepted when no shipped tag has the same one: prompts are audio, so e.g. a
   ``zh-Hant-TW`` caller gets the Mandarin of ``zh-CN`` rather than English;
3. otherwise the manifest's default language, ``en-US``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

import langcodes
from langcodes.tag_parser import LanguageTagError

from engine.errors import PromptError
from engine.flow.actions import SystemPrompt

__all__ = ["SYSTEM_PROMPT_NAMES", "PromptError", "PromptLibrary", "default_prompts_dir"]

SYSTEM_PROMPT_NAMES: Final[tuple[str, ...]] = tuple(prompt.value for prompt in SystemPrompt)

DEFAULT_LANGUAGE: Final = "en-US"
PROMPTS_DIR_ENV: Final = "VR_PROMPTS_DIR"
MANIFEST_NAME: Final = "manifest.json"
_BUNDLED_PROMPTS_DIR: Final = Path(__file__).resolve().parent.parent / "prompts"


def default_prompts_dir() -> Path:
    """``$VR_PROMPTS_DIR`` if set, else the repository's ``prompts/`` (engine/../prompts)."""
    override = os.environ.get(PROMPTS_DIR_ENV)
    return Path(override) if override else _BUNDLED_PROMPTS_DIR


DEFAULT_PROMPTS_DIR: Final[Path] = default_prompts_dir()


def _regenerate_hint(tag: str | None = None) -> str:
    return "prompts/generate" + (f" --lang {tag}" if tag else "")


class PromptLibrary:
    """The system prompts shipped in one directory (see module docstring)."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self._dir = Path(directory) if directory is not None else default_prompts_dir()
        manifest = self._load_manifest()
        self._names: tuple[str, ...] = tuple(manifest["prompts"])
        self._default: str = manifest["default_language"]
        self._texts: dict[str, dict[str, str]] = {
            tag: dict(lang["texts"]) for tag, lang in manifest["languages"].items()
        }
        self._check_files()
        self._expanded: dict[str, langcodes.Language] = {
            tag: langcodes.Language.get(tag).maximize() for tag in self._texts
        }
        self._resolved: dict[str, str] = {}

    # ------------------------------------------------------------------ loading

    def _load_manifest(self) -> dict[str, Any]:
        path = self._dir / MANIFEST_NAME
        try:
            with open(path, encoding="utf-8") as f:
                manifest = json.load(f)
        except FileNotFoundError:
            raise PromptError(f"prompt manifest {path} not found") from None
        except (OSError, ValueError) as exc:
            raise PromptError(f"cannot read prompt manifest {path}: {exc}") from exc
        try:
            self._validate_manifest(manifest)
        except (KeyError, TypeError, AttributeError) as exc:
            raise PromptError(f"malformed prompt manifest {path}: {exc!r}") from exc
        result: dict[str, Any] = manifest
        return result

    def _validate_manifest(self, manifest: Any) -> None:
        path = self._dir / MANIFEST_NAME
        names = manifest["prompts"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PromptError(f"{path}: 'prompts' must be a list of names")
        missing_names = [n for n in SYSTEM_PROMPT_NAMES if n not in names]
        if missing_names:
            raise PromptError(f"{path}: system prompts not listed: {', '.join(missing_names)}")
        languages = manifest["languages"]
        if not isinstance(languages, dict) or not languages:
            raise PromptError(f"{path}: 'languages' must be a non-empty object")
        for tag, lang in languages.items():
            try:
                standard = langcodes.standardize_tag(tag, macro=True)
            except LanguageTagError:
                standard = None
            if standard != tag:
                raise PromptError(
                    f"{path}: language {tag!r} is not a standard BCP 47 tag"
                    + (f" (use {standard!r})" if standard else "")
                )
            texts = lang["texts"]
            absent = [n for n in names if not isinstance(texts.get(n), str)]
            if absent:
                raise PromptError(f"{path}: language {tag} has no text for {', '.join(absent)}")
        default = manifest.get("default_language", DEFAULT_LANGUAGE)
        if default not in languages:
            raise PromptError(f"{path}: default language {default} is not shipped")
        manifest["default_language"] = default

    def _check_files(self) -> None:
        missing = [
            (tag, self._dir / tag / f"{name}.wav")
            for tag in self._texts
            for name in self._names
            if not (self._dir / tag / f"{name}.wav").is_file()
        ]
        if missing:
            tags = sorted({tag for tag, _ in missing})
            shown = ", ".join(str(p) for _, p in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            hints = "; ".join(_regenerate_hint(tag) for tag in tags)
            raise PromptError(f"missing prompt file(s): {shown}{more}; regenerate with: {hints}")

    # ------------------------------------------------------------------ queries

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def default_language(self) -> str:
        return self._default

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def languages(self) -> list[str]:
        """The shipped language tags, in manifest order."""
        return list(self._texts)

    def resolve_language(self, tag: str) -> str:
        """The shipped language used for a requested BCP 47 tag (never raises)."""
        resolved = self._resolved.get(tag)
        if resolved is None:
            resolved = self._resolve(tag)
            self._resolved[tag] = resolved
        return resolved

    def _resolve(self, tag: str) -> str:
        try:
            standard = langcodes.standardize_tag(tag.strip(), macro=True)
            wanted = langcodes.Language.get(standard)
        except (LanguageTagError, ValueError):
            return self._default
        if standard in self._texts:
            return standard
        if wanted.language is None:  # "und", private use and the like
            return self._default
        expanded = wanted.maximize()
        likely = langcodes.Language.make(language=wanted.language, script=expanded.script)
        likely_region = likely.maximize().territory
        candidates = [
            shipped for shipped, exp in self._expanded.items() if exp.language == expanded.language
        ]
        if not candidates:
            return self._default

        def rank(shipped: str) -> tuple[bool, bool, int, bool, str]:
            exp = self._expanded[shipped]
            return (
                (exp.script, exp.territory) != (expanded.script, expanded.territory),
                exp.script != expanded.script,
                langcodes.tag_distance(standard, shipped),
                exp.territory != likely_region,
                shipped,
            )

        return min(candidates, key=rank)

    def path(self, tag: str, name: str) -> Path:
        """The WAV file of prompt ``name`` in the language resolved for ``tag``."""
        self._check_name(name)
        return self._dir / self.resolve_language(tag) / f"{name}.wav"

    def text(self, tag: str, name: str) -> str:
        """What prompt ``name`` says, in the language resolved for ``tag``."""
        self._check_name(name)
        return self._texts[self.resolve_language(tag)][name]

    def _check_name(self, name: str) -> None:
        if name not in self._names:
            raise PromptError(
                f"unknown prompt name {name!r}; system prompts are: {', '.join(self._names)}"
            )
