"""The images and the lock file stay buildable and reproducible, checked without Docker.

Docker is absent on CI, so nothing here builds an image. What can break silently is checked
instead: a COPY of a path that is gone or that the .dockerignore drops, an entrypoint module that
was renamed, a base image that floats (``latest``, ``3.11-slim``), a root user, a missing
HEALTHCHECK, a ``pip install`` that ignores requirements.lock, and a lock that no longer satisfies
pyproject.toml or that the running environment was not installed from.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import posixpath
import re
import shlex
import sysconfig
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from slipway.builders.rayjob import RAY_VERSION

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DOCKERFILES = sorted((REPO / "images").glob("*/Dockerfile"))
EXTRAS = ("dev", "train", "serve")
# What each image installs of the project: only its own extra, never the dev tools.
IMAGE_EXTRAS = {"operator": set[str](), "predictor": {"serve"}, "trainer": {"train"}}


# -- a small Dockerfile parser ----------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest, continuation lines joined
    line: int  # where it starts, for messages


@dataclass
class Stage:
    base: str  # the FROM image with the global ARG defaults substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def last(self, keyword: str) -> Instruction | None:
        found = [i for i in self.instructions if i.keyword == keyword]
        return found[-1] if found else None


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions: `\\` continues a line; comment lines (also inside one) are dropped."""
    assert "# escape=" not in text.split("\n", 1)[0], "a non-default escape character needs a smarter parser"
    parsed: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#") or (not line and parts):
            continue
        if not line:
            continue
        if not parts:
            start = number
        continued = line.endswith("\\")
        parts.append(line[:-1].strip() if continued else line)
        if not continued:
            keyword, _, args = " ".join(parts).partition(" ")
            parsed.append(Instruction(keyword.upper(), args.strip(), start))
            parts = []
    assert not parts, "the Dockerfile ends inside a continued line"
    return parsed


def substitute(value: str, args: dict[str, str]) -> str:
    """`$NAME`, `${NAME}` and `${NAME:-default}` as Docker expands them in FROM."""

    def one(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        default = match.group("default")
        found = args.get(name, "")
        return found if found or default is None else default

    pattern = r"\$(?:\{(?P<braced>\w+)(?::-(?P<default>[^}]*))?\}|(?P<bare>\w+))"
    return re.sub(pattern, one, value)


def unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" else value


def stages(dockerfile: Path) -> list[Stage]:
    """The build stages; global ARGs (before the first FROM) supply their defaults to FROM."""
    global_args: dict[str, str] = {}
    found: list[Stage] = []
    for instruction in instructions(dockerfile.read_text()):
        if instruction.keyword == "ARG" and not found:
            name, _, default = instruction.args.partition("=")
            global_args[name.strip()] = unquote(default.strip())
        elif instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            stage_name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"{dockerfile}:{instruction.line}: cannot read FROM {instruction.args}"
            found.append(Stage(substitute(words[0], global_args), stage_name))
        elif found:
            found[-1].instructions.append(instruction)
    assert found, f"{dockerfile}: no FROM"
    return found


def exec_form(instruction: Instruction) -> list[str]:
    """The argv of an exec-form (JSON) ENTRYPOINT, CMD or HEALTHCHECK CMD; shell form is refused."""
    text = instruction.args
    if instruction.keyword == "HEALTHCHECK":
        parts = re.split(r"(?:^|\s)CMD\s", text, maxsplit=1)
        text = parts[1].strip() if len(parts) == 2 else ""
    assert text.startswith("["), f"line {instruction.line}: use the exec (JSON) form, not {text!r}"
    argv = json.loads(text)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def image_name(dockerfile: Path) -> str:
    return dockerfile.parent.name


def final(dockerfile: Path) -> Stage:
    return stages(dockerfile)[-1]


def ids(paths: list[Path]) -> list[str]:
    return [image_name(p) for p in paths]


def test_there_are_three_images() -> None:
    assert set(ids(DOCKERFILES)) == set(IMAGE_EXTRAS)


# -- .dockerignore ----------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as moby's patternmatcher reads it: Go's filepath.Match plus `**`."""
    out = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out += "(.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(f"^{out}$")


@dataclass(frozen=True)
class DockerIgnore:
    rules: tuple[tuple[re.Pattern[str], bool], ...]  # (pattern, is an exception `!`)

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        rules = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            cleaned = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((_pattern_regex(cleaned), exception))
        return cls(tuple(rules))

    def excludes(self, relative: str) -> bool:
        """Whether the path is left out of the context: the last rule matching it or a parent wins."""
        parts = relative.strip("/").split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for regex, exception in self.rules:
            if any(regex.match(candidate) for candidate in candidates):
                excluded = not exception
        return excluded


def test_the_dockerignore_reader_follows_dockers_rules() -> None:
    ignore = DockerIgnore(
        tuple(
            (_pattern_regex(p.lstrip("!")), p.startswith("!"))
            for p in ("*", "!operator", "!README.md", "**/__pycache__", "**/*.py[cod]", "operator/tmp*")
        )
    )
    assert ignore.excludes(".git/config") and ignore.excludes(".venv") and ignore.excludes("tests/unit/x.py")
    assert not ignore.excludes("operator/slipway/__init__.py") and not ignore.excludes("README.md")
    assert ignore.excludes("operator/slipway/__pycache__/x.cpython-311.pyc")
    assert ignore.excludes("operator/slipway/x.pyc") and not ignore.excludes("operator/slipway/x.py")
    assert ignore.excludes("operator/tmp1/a") and not ignore.excludes("operator/slipway/tmp1")


def copy_sources(instruction: Instruction) -> list[str]:
    """The context paths a COPY/ADD reads (none for `--from=`, a stage or an image)."""
    words = json.loads(instruction.args) if instruction.args.startswith("[") else shlex.split(instruction.args)
    if any(w.startswith("--from") for w in words):
        return []
    paths = [w for w in words if not w.startswith("--")]
    assert len(paths) >= 2, f"line {instruction.line}: {instruction.keyword} needs a source and a destination"
    return [p for p in paths[:-1] if not re.match(r"^[a-z]+://", p)]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_every_copied_path_is_in_the_build_context(dockerfile: Path) -> None:
    ignore_file = dockerfile.with_name("Dockerfile.dockerignore")
    assert ignore_file.exists(), f"{ignore_file}: without it .git, .venv and .dev go into the context"
    ignore = DockerIgnore.read(ignore_file)
    copied = 0
    for stage in stages(dockerfile):
        for instruction in stage.instructions:
            if instruction.keyword not in ("COPY", "ADD"):
                continue
            for source in copy_sources(instruction):
                pattern = posixpath.normpath(source).lstrip("/")
                matches = sorted(REPO.glob(pattern)) if pattern != "." else [REPO]
                where = f"{dockerfile.relative_to(REPO)}:{instruction.line}"
                assert matches, f"{where}: COPY {source}: no such path in the repository"
                for match in matches:
                    relative = match.relative_to(REPO).as_posix()
                    assert not ignore.excludes(relative), f"{where}: {ignore_file.name} leaves {relative} out"
                    if match.is_dir():
                        kept = [f for f in match.rglob("*.py") if not ignore.excludes(f.relative_to(REPO).as_posix())]
                        assert kept, f"{where}: {ignore_file.name} leaves every file of {relative} out"
                    copied += 1
    assert copied >= 2


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_local_state_stays_out_of_the_context(dockerfile: Path) -> None:
    ignore = DockerIgnore.read(dockerfile.with_name("Dockerfile.dockerignore"))
    for path in (".git", ".venv", ".dev", "tests", "operator/slipway/__pycache__", "operator/slipway.egg-info"):
        assert ignore.excludes(path), f"{image_name(dockerfile)}: {path} would be sent to the builder"


# -- entrypoints ------------------------------------------------------------------------------


def _check_module_runs(module: str, where: str) -> None:
    """`python -m module` finds it: a module, or a package with a __main__."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{where}: no module {module}"
    if spec.submodule_search_locations is not None:
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{where}: {module} has no __main__"


def _check_script(name: str, where: str) -> None:
    scripts: dict[str, str] = PYPROJECT["project"]["scripts"]
    assert name in scripts, f"{where}: {name} is neither python nor a console script of pyproject.toml"
    module, _, attribute = scripts[name].partition(":")
    assert importlib.util.find_spec(module) is not None, f"{where}: {name} -> no module {module}"
    assert callable(getattr(importlib.import_module(module), attribute, None)), f"{where}: no {scripts[name]}"


@pytest.mark.parametrize("script", sorted(PYPROJECT["project"]["scripts"]))
def test_every_console_script_resolves(script: str) -> None:
    _check_script(script, "pyproject.toml")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_entrypoint_modules_exist(dockerfile: Path) -> None:
    stage = final(dockerfile)
    entrypoint, cmd = stage.last("ENTRYPOINT"), stage.last("CMD")
    argv = (exec_form(entrypoint) if entrypoint else []) + (exec_form(cmd) if cmd else [])
    where = f"{image_name(dockerfile)} image"
    if not argv:
        assert image_name(dockerfile) == "trainer", f"{where}: no ENTRYPOINT (only the trainer's comes from the RayJob)"
        return
    if Path(argv[0]).name in ("python", "python3"):
        assert "-m" in argv, f"{where}: run a module (`python -m ...`), not a file path"
        _check_module_runs(argv[argv.index("-m") + 1], where)
    else:
        _check_script(argv[0], where)


# -- base images ------------------------------------------------------------------------------

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def pin_problem(image: str) -> str | None:
    """Why a FROM reference floats, or None: an exact version tag, a well-formed digest if any."""
    reference, _, digest = image.partition("@")
    if digest and not _DIGEST.match(digest):
        return f"malformed digest {digest!r}"
    last = reference.rsplit("/", 1)[-1]
    if ":" not in last:
        return "no tag (that is `latest`)"
    tag = last.split(":", 1)[1]
    if tag == "latest" or "$" in image:
        return f"tag {tag!r} is not a release"
    if not re.search(r"(?<![\d.])\d+\.\d+\.\d+(?![\d.])", tag):
        return f"tag {tag!r} has no exact version (major.minor.patch)"
    return None


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("python:3.11.15-slim-bookworm", True),
        ("rayproject/ray:2.60.0-py311-gpu", True),
        ("python:3.11.15-slim-bookworm@sha256:" + "a" * 64, True),
        ("registry.local:5000/python:3.11.15", True),
        ("python:3.11-slim", False),
        ("python:3-slim", False),
        ("python:latest", False),
        ("python", False),
        ("registry.local:5000/python", False),
        ("python:3.11.15-slim@sha256:abc", False),
        ("rayproject/ray:-py311", False),
    ],
)
def test_the_pin_rule(image: str, pinned: bool) -> None:
    assert (pin_problem(image) is None) is pinned, pin_problem(image)


def test_arg_defaults_reach_from() -> None:
    assert substitute("rayproject/ray:${V}-py311${P}", {"V": "2.60.0", "P": ""}) == "rayproject/ray:2.60.0-py311"
    assert substitute("${IMAGE:-python:3.11.15}", {}) == "python:3.11.15"
    assert substitute("$IMAGE", {"IMAGE": "python:3.11.15-slim"}) == "python:3.11.15-slim"


def _lock_python() -> str:
    found = re.search(r"--python-version (\d+\.\d+)", LOCK.read_text())
    assert found, "requirements.lock's header names no --python-version"
    return found.group(1)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_every_base_image_is_pinned_and_runs_the_locks_python(dockerfile: Path) -> None:
    all_stages = stages(dockerfile)
    names = {s.name for s in all_stages if s.name}
    python = _lock_python()
    for stage in all_stages:
        if stage.base in names:
            continue  # an earlier stage of this file
        problem = pin_problem(stage.base)
        assert problem is None, f"{image_name(dockerfile)}: FROM {stage.base}: {problem}"
        tag = stage.base.split("@")[0].rsplit(":", 1)[1]
        assert tag.startswith(f"{python}.") or f"-py{python.replace('.', '')}" in tag, (
            f"{image_name(dockerfile)}: FROM {stage.base} does not run Python {python}, the lock's"
        )


def test_the_trainers_ray_is_the_locked_and_the_operators_ray() -> None:
    trainer = (REPO / "images/trainer/Dockerfile").read_text()
    default = re.search(r"^ARG RAY_VERSION=(\S+)$", trainer, flags=re.M)
    assert default, "images/trainer/Dockerfile: no ARG RAY_VERSION default"
    assert default.group(1) == locked()["ray"] == RAY_VERSION


# -- the final stage: user, healthcheck -------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_the_image_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    user = final(dockerfile).last("USER")
    assert user, f"{image_name(dockerfile)}: no USER in the final stage (the base's may be root)"
    found = re.fullmatch(r"(\d+)(?::(\d+))?", user.args)
    assert found, f"{image_name(dockerfile)}: USER {user.args}: numeric, so runAsNonRoot can verify it"
    assert int(found.group(1)) != 0, f"{image_name(dockerfile)}: USER is root"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_the_image_has_a_healthcheck_that_works_in_a_slim_image(dockerfile: Path) -> None:
    stage = final(dockerfile)
    check = stage.last("HEALTHCHECK")
    assert check, f"{image_name(dockerfile)}: no HEALTHCHECK (HEALTHCHECK NONE, with a reason, for batch images)"
    if check.args.strip().upper() == "NONE":
        assert image_name(dockerfile) == "trainer", "only the batch image goes without a health check"
        return
    argv = exec_form(check)
    assert not {"curl", "wget"} & {Path(a).name for a in argv}, "slim images have no curl: use python's urllib"
    if argv[:2] == ["python", "-c"]:
        compile(argv[2], f"{image_name(dockerfile)} HEALTHCHECK", "exec")
    exposed = {int(p.split("/")[0]) for i in stage.instructions if i.keyword == "EXPOSE" for p in i.args.split()}
    ports = {int(p) for p in re.findall(r"//(?:127\.0\.0\.1|localhost):(\d+)/", " ".join(argv))}
    assert ports, f"{image_name(dockerfile)}: the HEALTHCHECK calls no local port"
    assert ports <= exposed, f"{image_name(dockerfile)}: HEALTHCHECK port {ports} is not EXPOSEd ({exposed})"


# -- pip installs use the lock ----------------------------------------------------------------


def pip_installs(dockerfile: Path) -> list[list[str]]:
    """The argv (from `install` on) of every `pip install` in a RUN, split at && and ;."""
    found = []
    for stage in stages(dockerfile):
        for instruction in stage.instructions:
            if instruction.keyword != "RUN":
                continue
            for command in re.split(r"&&|;|\|\|", instruction.args):
                words = shlex.split(command)
                for n, word in enumerate(words[:-1]):
                    if Path(word).name in ("pip", "pip3") and words[n + 1] == "install":
                        found.append(words[n + 1 :])
                    if word == "-m" and words[n + 1] == "pip" and words[n + 2 : n + 3] == ["install"]:
                        found.append(words[n + 2 :])
    return found


def _uses_the_lock(argv: list[str]) -> bool:
    for n, word in enumerate(argv[:-1]):
        if word in ("-c", "--constraint", "-r", "--requirement") and Path(argv[n + 1]).name == LOCK.name:
            return True
    return any(re.fullmatch(r"--(constraint|requirement)=.*requirements\.lock", w) for w in argv)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_every_pip_install_uses_the_lock_and_only_the_images_extra(dockerfile: Path) -> None:
    installs = pip_installs(dockerfile)
    assert installs, f"{image_name(dockerfile)}: no pip install found"
    extras: set[str] = set()
    for argv in installs:
        assert _uses_the_lock(argv), f"{image_name(dockerfile)}: `pip {' '.join(argv)}` ignores requirements.lock"
        for word in argv:
            local = re.fullmatch(r"[./][^\[\]]*(?:\[(?P<extras>[^\]]*)\])?", word)
            if local and local.group("extras"):
                extras |= {e.strip() for e in local.group("extras").split(",")}
    assert extras == IMAGE_EXTRAS[image_name(dockerfile)], f"{image_name(dockerfile)} installs extras {extras}"


def test_the_dev_venv_installs_from_the_lock() -> None:
    makefile = (REPO / "Makefile").read_text()
    rule = re.search(r"^\$\(STAMP\):(?P<deps>.*)\n(?P<recipe>(?:\t.*\n)+)", makefile, flags=re.M)
    assert rule, "Makefile: no $(STAMP) rule"
    assert "requirements.lock" in rule.group("deps").split(), "a changed lock must re-install the venv"
    installs = [line for line in rule.group("recipe").splitlines() if "pip install" in line and " -e " in line]
    assert installs and all(_uses_the_lock(shlex.split(line)) for line in installs), installs
    assert re.search(r"^lock:", makefile, flags=re.M), "Makefile: no `lock` target"


# -- the lock ---------------------------------------------------------------------------------


@cache
def locked() -> dict[str, str]:
    """Canonical name -> pinned version, from requirements.lock."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(LOCK.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        found = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        assert found, f"requirements.lock:{number}: {line!r} is not `name==version`"
        name = canonicalize_name(found.group(1))
        assert name not in pins, f"requirements.lock:{number}: {name} pinned twice"
        pins[name] = found.group(2)
    return pins


def project_requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    texts = list(project["dependencies"])
    for extra in EXTRAS:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def test_the_lock_pins_everything_and_not_the_project() -> None:
    pins = locked()
    assert len(pins) > 50
    assert canonicalize_name(PYPROJECT["project"]["name"]) not in pins, "the project itself is installed, not locked"
    assert "generated by `make lock`" in LOCK.read_text().split("\n", 1)[0]


@pytest.mark.parametrize("requirement", project_requirements(), ids=str)
def test_the_lock_satisfies_pyproject(requirement: Requirement) -> None:
    if requirement.marker is not None and not requirement.marker.evaluate():
        return
    version = locked().get(canonicalize_name(requirement.name))
    assert version is not None, f"{requirement} is not in requirements.lock: run `make lock`"
    assert requirement.specifier.contains(version, prereleases=True), (
        f"requirements.lock pins {requirement.name}=={version}, pyproject.toml wants {requirement}: run `make lock`"
    )


@cache
def installed() -> dict[str, importlib.metadata.Distribution]:
    """What pip installed into this environment, by canonical name. Read from site-packages, not
    sys.path: `import ray` prepends Ray's vendored copies (ray/thirdparty_files, psutil among them),
    which are Ray's business, not the lock's."""
    return {
        canonicalize_name(dist.metadata["Name"]): dist
        for dist in importlib.metadata.distributions(path=[sysconfig.get_paths()["purelib"]])
    }


def test_the_environment_was_installed_from_the_lock() -> None:
    """Every locked package that is installed has its locked version: CI proves it used the lock."""
    checked, wrong = 0, []
    for name, version in locked().items():
        if name not in installed():
            continue
        installed_version = installed()[name].version
        checked += 1
        if Version(installed_version) != Version(version):
            wrong.append(f"{name} {installed_version} (locked {version})")
    assert not wrong, f"installed versions differ from requirements.lock (run `make venv`): {wrong}"
    core = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    assert checked >= len(core), "too few locked packages are installed for this check to mean anything"


def test_the_lock_is_closed_over_installed_dependencies() -> None:
    """A line dropped by hand shows: each installed locked package's own requirements are locked."""
    missing = set()
    for name in locked():
        if name not in installed():
            continue
        for text in installed()[name].requires or []:
            requirement = Requirement(text)
            applies = requirement.marker is None or requirement.marker.evaluate({"extra": ""})
            if applies and canonicalize_name(requirement.name) not in locked():
                missing.add(f"{requirement.name} (for {name})")
    assert not missing, f"requirements.lock lacks {sorted(missing)}: run `make lock`"


def test_the_trainer_has_the_ray_cli_that_kuberays_submitter_runs() -> None:
    """KubeRay's submitter Job (K8sJobMode) runs `ray job submit ...` in the trainer image: the
    image must install the ray distribution, whose `ray` console script must resolve."""
    trainer = REPO / "images/trainer/Dockerfile"
    named = {
        canonicalize_name(Requirement(re.sub(r"\$\{\w+\}", "0", word)).name)  # build ARGs as a version
        for argv in pip_installs(trainer)
        for word in argv[1:]
        if not word.startswith(("-", ".", "/")) and re.match(r"^[A-Za-z0-9]", word)
    }
    assert "ray" in named, f"images/trainer: no pip install names ray ({sorted(named)})"
    assert final(trainer).base.startswith("rayproject/ray:"), "the base image no longer brings Ray's own CLI set-up"
    scripts = {e.name: e for e in importlib.metadata.distribution("ray").entry_points if e.group == "console_scripts"}
    assert "ray" in scripts, "the locked ray declares no `ray` console script"
    module, _, _ = scripts["ray"].value.partition(":")
    assert importlib.util.find_spec(module) is not None, f"`ray` resolves to {scripts['ray'].value}, which is gone"
