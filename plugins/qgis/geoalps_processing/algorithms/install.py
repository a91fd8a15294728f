"""geoalps:installgeoalps — "Install or update geoalps" into a private environment of the profile."""
from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
)

from .. import installer, settings
from ..runner import run_geoalps

HELP = """Creates (or updates) the Python environment the GeoALPS algorithms run in, and points them at it. Nothing is installed into QGIS's own Python.

It looks for a Python 3.10 or newer on the PATH (python3.12, python3.11, python3.10, python3), makes a virtual environment in the QGIS profile folder (geoalps/venv), installs the geoalps wheel this plugin carries with pip, and sets Processing > Options > Providers > GeoALPS > "geoalps command" to it. pip's output is shown in the log; Cancel stops pip (run it again to finish).

torch: "None" installs the core only (the weight-free classical engine; about 0.8 GB, no torch). "CPU" and "CUDA" also install torch (from the PyTorch package index of that build), SAM and training (several GB; CUDA for NVIDIA GPUs).

"Also install SAM 2" (off by default; needs torch CPU or CUDA) adds the sam2 package for the SAM 2 / 2.1 engine (engine "sam2"): after geoalps, pip builds sam2 {sam2_version} from its source package against the torch just installed with pip --no-build-isolation and SAM2_BUILD_CUDA=0 (no CUDA extension, nothing compiled, no second torch; under a minute and about 1.5 MB of downloads: sam2, hydra-core, iopath and their small dependencies, setuptools, wheel). If that step fails, the log says so and shows pip's error; geoalps is still installed and usable with the sam and classical engines. With torch "None" the option is refused: SAM 2 runs on torch.

Without a suitable Python it says what to install (e.g. sudo apt install python3 python3-venv, or the installer from python.org). Advanced: a Python interpreter to use, another wheel, another environment folder, another torch index and extra pip arguments (e.g. --proxy http://host:port).""".format(
    sam2_version=installer.SAM2_VERSION)

SAM2_NEEDS_TORCH = ("GeoALPS: SAM 2 runs on torch: choose torch CPU or CUDA to install it, or untick "
                    "\"Also install SAM 2\".")


class InstallGeoAlpsAlgorithm(QgsProcessingAlgorithm):
    """Make ``<profile>/geoalps/venv`` from a system Python, pip-install the wheel, use it."""

    TORCH = "TORCH"
    SAM2 = "SAM2"
    PYTHON = "PYTHON"
    WHEEL = "WHEEL"
    TARGET = "TARGET"
    TORCH_INDEX_URL = "TORCH_INDEX_URL"
    PIP_ARGS = "PIP_ARGS"
    GEOALPS_CLI = "GEOALPS_CLI"
    VERSION = "VERSION"

    def __init__(self) -> None:
        super().__init__()
        self._cli = ""

    def createInstance(self):  # noqa: N802 (QGIS's name)
        return type(self)()

    def name(self) -> str:
        return "installgeoalps"

    def displayName(self) -> str:  # noqa: N802 (QGIS's name)
        return "Install or update geoalps"

    def group(self) -> str:
        return "Setup"

    def groupId(self) -> str:  # noqa: N802 (QGIS's name)
        return "setup"

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS's name)
        return HELP

    def tags(self):
        return ["install", "update", "setup", "environment", "pip", "torch", "venv"]

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(QgsProcessingParameterEnum(
            self.TORCH, "torch (deep-learning library)", options=list(installer.TORCH_LABELS),
            defaultValue=0,
        ))
        self.addParameter(QgsProcessingParameterBoolean(
            self.SAM2, "Also install SAM 2 (sam2 package, builds from source, about a minute)",
            defaultValue=False, optional=True,
        ))
        advanced = [
            QgsProcessingParameterFile(
                self.PYTHON, "Python interpreter to build the environment from (empty: search the PATH)",
                behavior=QgsProcessingParameterFile.File, fileFilter="All files (*)", optional=True,
            ),
            QgsProcessingParameterFile(
                self.WHEEL, "geoalps wheel (empty: the one this plugin carries)",
                behavior=QgsProcessingParameterFile.File,
                fileFilter="Python wheels (*.whl);;All files (*)", optional=True,
            ),
            QgsProcessingParameterFile(
                self.TARGET, "Environment folder (empty: geoalps/venv in the QGIS profile folder)",
                behavior=QgsProcessingParameterFile.Folder, optional=True,
            ),
            QgsProcessingParameterString(
                self.TORCH_INDEX_URL, "torch package index (empty: PyTorch's index of the chosen build)",
                defaultValue="", optional=True,
            ),
            QgsProcessingParameterString(
                self.PIP_ARGS, "Extra pip arguments (e.g. --proxy http://host:port)",
                defaultValue="", optional=True,
            ),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addOutput(QgsProcessingOutputString(self.GEOALPS_CLI, "geoalps command"))
        self.addOutput(QgsProcessingOutputString(self.VERSION, "Installed geoalps version"))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's name)
        """Refuse SAM 2 without torch before anything runs (the dialog shows the message)."""
        ok, message = super().checkParameterValues(parameters, context)
        if ok and self._sam2_without_torch(parameters, context):
            return False, SAM2_NEEDS_TORCH
        return ok, message

    def _sam2_without_torch(self, parameters: dict, context: QgsProcessingContext) -> bool:
        choice = installer.TORCH_CHOICES[self.parameterAsEnum(parameters, self.TORCH, context)]
        return choice == "none" and self.parameterAsBool(parameters, self.SAM2, context)

    def processAlgorithm(  # noqa: N802 (QGIS's name)
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        """Plan (what to install where, with which Python), run the pip steps, verify the
        installed geoalps; SAM 2 last, so a failed build leaves a working geoalps."""
        feedback = feedback or QgsProcessingFeedback()
        started = time.monotonic()
        plan = self._plan(parameters, context, feedback)
        steps = _Steps(plan, feedback)
        for step in plan.steps:
            steps.run(step)
        version = self._verify(plan, feedback)
        with_sam2 = self._install_sam2(plan, steps, feedback)
        self._cli = plan.cli
        if os.environ.get(settings.ENV_VAR, "").strip():
            feedback.pushWarning(
                f"GeoALPS: the {settings.ENV_VAR} environment variable is set and wins over the new "
                "setting; unset it to use this environment."
            )
        feedback.pushInfo(f"GeoALPS: geoalps {version} is installed{with_sam2} "
                          f"({time.monotonic() - started:.0f} s); the GeoALPS algorithms now run {plan.cli}")
        return {self.GEOALPS_CLI: plan.cli, self.VERSION: version}

    def _plan(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> "_Plan":
        """The parameters read and checked, the Python found (when the environment is made anew)
        and the list of steps; nothing is installed yet."""
        choice = installer.TORCH_CHOICES[self.parameterAsEnum(parameters, self.TORCH, context)]
        if self._sam2_without_torch(parameters, context):  # a caller that skipped the check
            raise QgsProcessingException(SAM2_NEEDS_TORCH)
        sam2 = self.parameterAsBool(parameters, self.SAM2, context)
        explicit_python = self.parameterAsFile(parameters, self.PYTHON, context) or ""
        wheel = self.parameterAsFile(parameters, self.WHEEL, context) or ""
        env_dir = self.parameterAsFile(parameters, self.TARGET, context) or settings.private_env_dir()
        env_dir = os.path.abspath(os.path.expanduser(env_dir))
        index_override = self.parameterAsString(parameters, self.TORCH_INDEX_URL, context) or ""
        try:
            extra = shlex.split(self.parameterAsString(parameters, self.PIP_ARGS, context) or "")
        except ValueError as exc:
            raise QgsProcessingException(f"GeoALPS: could not read the extra pip arguments: {exc}") from exc

        try:
            wheel = os.path.abspath(os.path.expanduser(wheel)) if wheel else installer.bundled_wheel()
            if not os.path.isfile(wheel):
                raise installer.InstallError(f"GeoALPS: the wheel {wheel} does not exist.")
            index_url = installer.torch_index_url(choice, index_override)
            env_python = settings.env_executable(env_dir, "python")
            reuse, note = installer.existing_env_python(env_dir, env_python)
        except installer.InstallError as exc:
            raise QgsProcessingException(str(exc)) from exc
        if note:
            feedback.pushWarning(f"GeoALPS: {note}.")
        feedback.pushInfo(f"GeoALPS: installing {os.path.basename(wheel)} (torch: {choice}"
                          f"{', with SAM 2' if sam2 else ''}) into {env_dir}")

        python = None
        if not reuse:
            python = self._find_python(explicit_python, choice, feedback)
        elif explicit_python:
            feedback.pushInfo("GeoALPS: updating the existing environment; the Python interpreter "
                              "parameter is used only when it is made anew.")

        steps = []
        if not reuse:
            os.makedirs(os.path.dirname(env_dir), exist_ok=True)
            steps.append(("Creating the environment", installer.venv_command(
                python.path, env_dir, clear=os.path.exists(env_dir)), 5))
        steps.append(("Updating pip", installer.pip_upgrade_command(env_python, extra), 5))
        if index_url:
            steps.append((f"Installing torch ({choice})", installer.torch_command(env_python, index_url, extra), 50))
        steps.append(("Installing geoalps", installer.geoalps_command(env_python, wheel, choice, extra),
                      40 if index_url else 85))
        sam2_steps = []
        if sam2:
            tools, build = installer.sam2_commands(env_python, extra)
            sam2_steps = [("SAM 2: build tools (setuptools, wheel)", tools, 2),
                          (f"SAM 2: building sam2 {installer.SAM2_VERSION}", build, 8)]
        return _Plan(env_dir=env_dir, wheel=wheel, python=python, steps=tuple(steps), sam2_steps=tuple(sam2_steps),
                     cli=settings.env_executable(env_dir, "geoalps"))

    @staticmethod
    def _find_python(explicit_python: str, choice: str, feedback: QgsProcessingFeedback):
        """The Python 3.10+ the environment is made from (said in the log, with what was skipped)."""
        feedback.setProgressText("Looking for Python 3.10+")
        try:
            python, skipped = installer.find_python(explicit_python)
        except installer.InstallError as exc:
            raise QgsProcessingException(str(exc)) from exc
        for line in skipped:
            feedback.pushInfo(f"GeoALPS: skipped {line}")
        feedback.pushInfo(f"GeoALPS: using Python {python.version_text} at {python.path}")
        if python.version[:2] > (3, 12) and choice != "none":
            feedback.pushWarning(
                f"GeoALPS: torch may have no wheels for Python {python.version_text} yet; if pip "
                "finds none, give a Python 3.10-3.12 in the advanced \"Python interpreter\" parameter."
            )
        return python

    @staticmethod
    def _verify(plan: "_Plan", feedback: QgsProcessingFeedback) -> str:
        """The installed geoalps's version: it must answer ``--version`` as geoalps (a warning
        when it is not the wheel's)."""
        version = installer.installed_version(plan.cli)
        if not version:
            raise QgsProcessingException(
                f"GeoALPS: pip finished but '{plan.cli} --version' does not answer as geoalps; see the log above."
            )
        wanted = installer.wheel_version(plan.wheel)
        if wanted and version != wanted:
            feedback.pushWarning(f"GeoALPS: the environment has geoalps {version}, the wheel is {wanted}.")
        return version

    @staticmethod
    def _install_sam2(plan: "_Plan", steps: "_Steps", feedback: QgsProcessingFeedback) -> str:
        """Build SAM 2 if asked; a failure is reported, not raised (geoalps works without it).
        Returns the words the final log line adds."""
        if not plan.sam2_steps:
            return ""
        try:
            for step in plan.sam2_steps:
                steps.run(step, extra_env=installer.SAM2_BUILD_ENV)
        except QgsProcessingException as exc:
            if feedback.isCanceled():
                raise
            feedback.reportError(
                f"GeoALPS: SAM 2 could not be installed; geoalps works with the sam and classical "
                f"engines, not sam2. pip said:\n{exc}", fatalError=False)
            feedback.setProgress(100.0)
            return " without SAM 2 (see the error above)"
        return f" with SAM 2 (sam2 {installer.SAM2_VERSION})"

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802 (QGIS's name)
        # In the main thread: the Processing settings are not touched from the task's thread.
        if self._cli:
            settings.set_cli_setting(self._cli)
        return {}


@dataclass(frozen=True)
class _Plan:
    """What Install or update geoalps will do: the environment folder, the wheel, the Python it
    is made from (None: the existing environment is updated), the steps (progress text,
    command, weight) and the SAM 2 steps run after the check, and the geoalps command it makes."""

    env_dir: str
    wheel: str
    python: object
    steps: tuple
    sam2_steps: tuple
    cli: str


class _Steps:
    """Runs a plan's steps (venv, pip) one after another, each moving the bar by its weight."""

    def __init__(self, plan: _Plan, feedback: QgsProcessingFeedback) -> None:
        self.plan, self.feedback = plan, feedback
        self.total = float(sum(weight for _, _, weight in plan.steps + plan.sam2_steps))
        self.done = 0.0

    def run(self, step: tuple, extra_env: dict | None = None) -> None:
        text, command, weight = step
        feedback, plan = self.feedback, self.plan
        if feedback.isCanceled():
            raise QgsProcessingException("GeoALPS: cancelled; run Install or update geoalps again to finish.")
        feedback.setProgressText(text)
        start = 100.0 * self.done / self.total
        span = 100.0 * weight / self.total
        program = "venv" if command[1:3] == ["-m", "venv"] else "pip"
        try:
            run_geoalps(command, _StepFeedback(feedback, start, span), [], name=program,
                        on_line=_PipLines(feedback, start, span), extra_env=extra_env)
        except QgsProcessingException as exc:
            if feedback.isCanceled():
                raise QgsProcessingException(
                    f"GeoALPS: cancelled; {program} was stopped. The environment in {plan.env_dir} may "
                    "be half done: run Install or update geoalps again to finish."
                ) from exc
            if program == "venv":
                raise QgsProcessingException(
                    f"{exc}\nGeoALPS: could not create the environment with {plan.python.path}. "
                    f"{installer.python_install_hint()}"
                ) from exc
            raise
        self.done += weight
        feedback.setProgress(100.0 * self.done / self.total)


class _StepFeedback(QgsProcessingFeedback):
    """Relays one step's messages and cancel to the algorithm's feedback (progress is by step)."""

    def __init__(self, parent: QgsProcessingFeedback, start: float, span: float) -> None:
        super().__init__()
        self.parent = parent
        self.start, self.span = start, span

    def isCanceled(self) -> bool:  # noqa: N802 (QGIS's name)
        return self.parent.isCanceled()

    def setProgress(self, progress: float) -> None:  # noqa: N802 (QGIS's name)
        self.parent.setProgress(self.start + self.span * progress / 100.0)

    def setProgressText(self, text: str) -> None:  # noqa: N802 (QGIS's name)
        self.parent.setProgressText(text)

    def pushInfo(self, info: str) -> None:  # noqa: N802 (QGIS's name)
        self.parent.pushInfo(info)

    def pushWarning(self, warning: str) -> None:  # noqa: N802 (QGIS's name)
        self.parent.pushWarning(warning)

    def pushCommandInfo(self, info: str) -> None:  # noqa: N802 (QGIS's name)
        self.parent.pushCommandInfo(info)

    def pushConsoleInfo(self, info: str) -> None:  # noqa: N802 (QGIS's name)
        self.parent.pushConsoleInfo(info)

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802,N803
        self.parent.reportError(error, fatalError)


class _PipLines:
    """pip prints no percentages: each package it starts on moves the bar a little (never past
    the step's end) and shows as the progress text."""

    _STARTS = ("Collecting ", "Downloading ", "Installing collected packages", "Successfully installed",
               "Processing ", "Requirement already satisfied")

    def __init__(self, feedback: QgsProcessingFeedback, start: float, span: float) -> None:
        self.feedback, self.start, self.span, self.seen = feedback, start, span, 0

    def __call__(self, stream: str, text: str) -> None:
        line = text.strip()
        if not line.startswith(self._STARTS):
            return
        self.seen += 1
        self.feedback.setProgressText(line[:120])
        self.feedback.setProgress(self.start + self.span * 0.95 * (1.0 - 0.93 ** self.seen))
