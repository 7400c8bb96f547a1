"""The docs are checked against the code.

Rules, so that any helper adding docs knows what is enforced:

1. **Command lines.** In docs/*.md and README.md, every line inside a fenced
   code block that starts with `tokenkeys `, `$ tokenkeys `, `python -m tokenkeys `
   or `.venv/bin/tokenkeys ` (optionally after `VAR=value ` assignments) must
   parse against the real click commands: options, arguments and choices.
   A trailing `\\` joins the next line; a ` # comment` is dropped; `$VARS` and
   quoted values are taken as literal words. Write real syntax: no `[optional]`
   brackets or `…` inside command lines in code blocks.
   Inline code spans that start with `tokenkeys `, or with the name of an
   existing command group (`key generate`), must name an existing command
   (their arguments may be placeholders, `[optional]` parts are skipped).
   A fenced block opened with ```synopsis is grammar, not a command line: each
   `tokenkeys …` line there (indented lines continue it; ` | ` separates sibling
   subcommands or alternatives) must name existing commands, and every option it
   shows must belong to the command it is shown on.
2. **Messages.** In docs/errors.md, every code span in bold (**`…`**) is a
   message that must exist in tokenkeys' source (or click's, for click's own
   usage errors). In a quoted message `…` stands for text that varies; every
   piece between them must be literally in one message template, where each
   `{field}` of an f-string or format string may stand for anything.
3. **Exit codes.** Every error class in the table of docs/errors.md has the
   exit code of its row, and every class of tokenkeys.errors is in the table.
4. **CI packages.** The apt packages listed in docs/ci.md are those of .ci/install.
"""

from __future__ import annotations

import ast
import inspect
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from tokenkeys import errors
from tokenkeys.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [*sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "fr").glob("*.md")),
             ROOT / "README.md"]
_PREFIX = re.compile(r"^(?:\$ )?(?:[A-Z_][A-Z0-9_]*=\S* )*"
                     r"(?:tokenkeys|python3? -m tokenkeys|\.venv/bin/tokenkeys) ")
_FIELD = "\x00"


def command_lines() -> Iterator[tuple[str, str]]:
    """(where, command line) for every tokenkeys line in a fenced code block."""
    for path in DOC_FILES:
        fenced = False
        pending = ""
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if raw.lstrip().startswith("```"):
                fenced = not fenced and raw.strip() != "```synopsis"
                pending = ""
                continue
            if not fenced:
                continue
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            if _PREFIX.match(line):
                yield f"{path.name}:{number}", line


def inline_commands() -> Iterator[tuple[str, str]]:
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"```.*?```", "", text, flags=re.S)
        for m in re.finditer(r"`(tokenkeys [^`]+)`", text):
            yield path.name, m.group(1)
        root = click.Context(cli_main.cli)
        groups = [n for n in cli_main.cli.list_commands(root)
                  if isinstance(cli_main.cli.get_command(root, n), click.Group)]
        # Bold spans are quoted messages (rule 2), not commands.
        for m in re.finditer(r"(?<!\*\*)`((?:{}) [a-z][a-z-]*)\b[^`]*`".format(
                "|".join(groups)), text):
            yield path.name, "tokenkeys " + m.group(1)


def _words(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words.pop(0)
    if words[:1] == ["$"]:
        words.pop(0)
    start = next(i for i, w in enumerate(words) if w.endswith("tokenkeys"))
    return words[start + 1 :]


def _parse(args: list[str]) -> None:
    """Parse like `tokenkeys ARGS` would, down to the leaf command, without running it."""
    command: click.Command = cli_main.cli
    ctx = command.make_context("tokenkeys", list(args))
    while isinstance(command, click.Group):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            return
        name, sub, remaining = command.resolve_command(ctx, rest)
        assert sub is not None, f"no command {name!r}"
        command = sub
        ctx = sub.make_context(name or "", remaining, parent=ctx)


@pytest.mark.parametrize("where, line", list(command_lines()))
def test_documented_command_lines_parse(where: str, line: str) -> None:
    try:
        _parse(_words(line))
    except click.exceptions.Exit:  # --help / --version
        pass
    except click.ClickException as exc:
        pytest.fail(f"{where}: `{line}` does not parse: {exc.format_message()}")


def test_some_command_lines_were_found() -> None:
    assert len(list(command_lines())) >= 15


def synopsis_lines() -> Iterator[tuple[str, str]]:
    """(where, line) for every `tokenkeys` line of a ```synopsis block."""
    for path in DOC_FILES:
        inside, current, where = False, "", ""
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if raw.lstrip().startswith("```"):
                if current:
                    yield where, current
                inside, current = raw.strip() == "```synopsis", ""
                continue
            if not inside:
                continue
            if raw.startswith(" ") and current:
                current += " " + raw.strip()
                continue
            if current:
                yield where, current
            current, where = (raw.strip(), f"{path.name}:{number}") \
                if raw.startswith("tokenkeys ") else ("", "")


def _options(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


@pytest.mark.parametrize("where, line", list(synopsis_lines()))
def test_synopsis_names_real_commands_and_options(where: str, line: str) -> None:
    root: click.Command = cli_main.cli
    command, parent = root, None
    after_bar = False
    for token in re.findall(r"-{1,2}[A-Za-z][\w-]*|\||[^\s\[\]()|]+", line)[1:]:
        if token == "|":
            after_bar = True
            continue
        if token.startswith("-"):
            assert token in _options(command), f"{where}: {command.name} has no option {token}"
        elif after_bar and isinstance(parent, click.Group) and parent.get_command(
                click.Context(parent), token) is not None:
            command = parent.get_command(click.Context(parent), token)  # type: ignore[assignment]
        elif isinstance(command, click.Group):
            sub = command.get_command(click.Context(command), token)
            if sub is None and token.isupper():
                break  # COMMAND placeholder
            assert sub is not None, f"{where}: `{line}` names no command {token!r}"
            command, parent = sub, command
        after_bar = False


def test_some_synopsis_lines_were_found() -> None:
    assert len(list(synopsis_lines())) >= 15


@pytest.mark.parametrize("where, span", list(inline_commands()))
def test_inline_commands_exist(where: str, span: str) -> None:
    command: click.Command = cli_main.cli
    for word in shlex.split(re.sub(r"\[[^\]]*\]", " ", span).replace("…", ""))[1:]:
        if word.isupper():
            break  # a placeholder such as COMMAND
        if word.startswith("-") or not isinstance(command, click.Group):
            break
        sub = command.get_command(click.Context(command), word)
        assert sub is not None, f"{where}: `{span}` names no command {word!r}"
        command = sub


# -- messages ------------------------------------------------------------------------
def _templates(source: str) -> Iterator[str]:
    """Every string constant and f-string of a module, fields replaced by _FIELD."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str)
                          else _FIELD for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield re.sub(r"\{[^{}]*\}|%[sdr]", _FIELD, node.value)


def _corpus() -> list[str]:
    sources = [p.read_text(encoding="utf-8") for p in (ROOT / "tokenkeys").rglob("*.py")]
    sources += [p.read_text(encoding="utf-8")
                for p in Path(inspect.getfile(click)).parent.glob("*.py")]
    return [t for src in sources for t in _templates(src)]


CORPUS = _corpus()


def documented_messages() -> list[str]:
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    spans = re.findall(r"\*\*`([^`]+)`", text)
    spans += re.findall(r"\*\*`[^`]+`(?:, |/| / )`([^`]+)`", text)
    return sorted({" ".join(s.split()) for s in spans})


def _piece_in_template(piece: str, template: str) -> bool:
    """Is `piece` a substring of some rendering of `template`, where each field may be
    any text, with at least half of the piece (or 8 characters) literally from it?"""
    parts = template.split(_FIELD)
    if any(piece in part for part in parts):
        return True
    need = min(len(piece), max(8, len(piece) // 2))
    for i in range(len(parts) - 1):
        for j in range(i + 1, len(parts)):
            middle = parts[i + 1 : j]
            head_max = min(len(parts[i]), len(piece))
            for k in range(head_max, -1, -1):  # piece starts with the last k chars of part i
                if k and not piece.startswith(parts[i][-k:]):
                    continue
                for m in range(min(len(parts[j]), len(piece) - k), -1, -1):
                    if m and not piece.endswith(parts[j][:m]):
                        continue
                    inner = piece[k : len(piece) - m]
                    literal = k + m + sum(map(len, middle))
                    if literal < need:
                        continue
                    pattern = ".*".join(["", *map(re.escape, middle), ""])
                    if re.fullmatch(pattern, inner, re.S):
                        return True
    return False


@pytest.mark.parametrize("message", documented_messages())
def test_documented_messages_exist_in_the_code(message: str) -> None:
    pieces = [p.strip() for p in message.split("…")]
    for piece in (p for p in pieces if len(p) >= 3):
        assert any(_piece_in_template(piece, t) for t in CORPUS), (
            f"docs/errors.md quotes `{message}`: no message in the code contains {piece!r}")


def test_some_messages_were_found() -> None:
    assert len(documented_messages()) >= 40


# -- exit codes ------------------------------------------------------------------------
SPECIAL = {"InternalError": cli_main.EXIT_INTERNAL, "Interrupted": cli_main.EXIT_INTERRUPTED,
           "Aborted": cli_main.EXIT_INTERRUPTED}


def exit_table() -> dict[str, int]:
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    table: dict[str, int] = {}
    for m in re.finditer(r"^\|\s*(\d+)\s*\|([^|]*)\|", text, re.M):
        for cls in re.findall(r"`(\w+)`", m.group(2)):
            table[cls] = int(m.group(1))
    return table


def test_exit_code_table_matches_the_error_tree() -> None:
    table = exit_table()
    classes = {name: obj for name, obj in vars(errors).items()
               if isinstance(obj, type) and issubclass(obj, errors.TokenKeysError)}
    missing = sorted(set(classes) - set(table))
    assert not missing, f"error classes missing from the docs/errors.md table: {missing}"
    for name, code in table.items():
        expected = SPECIAL[name] if name in SPECIAL else classes[name].exit_code
        assert code == expected, f"docs/errors.md says {name} exits {code}, the code {expected}"


def test_ci_apt_packages_match_the_install_script() -> None:
    install = (ROOT / ".ci" / "install").read_text(encoding="utf-8")
    pkgs = set(re.search(r"PKGS=\(([^)]*)\)", install).group(1).split())  # type: ignore[union-attr]
    ci = " ".join((ROOT / "docs" / "ci.md").read_text(encoding="utf-8").split())
    listed = set(re.search(r"apt packages `([^`]*)`", ci).group(1).split())  # type: ignore[union-attr]
    assert listed == pkgs

