"""OmegaConf resolvers used by conf/: where the project lives and what a run folder is called."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from omegaconf import OmegaConf

from cellexp.engine.cluster import requeued


def project_root() -> str:
    """The checkout that holds conf/ (editable install), else the working directory."""
    root = Path(__file__).resolve().parent.parent
    return str(root if (root / "conf").is_dir() else Path.cwd())


def default_tracking_uri() -> str:
    """The store train.py writes to without overrides (conf/logger/mlflow.yaml), which the command-line tools read."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root()}/mlflow.db"


def run_id() -> str:
    """A run-folder name that every rank agrees on and a requeued job gets again.

    SLURM keeps SLURM_JOB_ID across a requeue; a rendezvous id names a multi-node torchrun job.
    Local ranks of a standalone launch (accelerate launch, torchrun) share their launcher process,
    whose start time and pid they all read; a single process takes its own start time (and `run_dir`
    makes its folder unique).
    """
    if os.environ.get("SLURM_JOB_ID"):
        array = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm-{os.environ['SLURM_JOB_ID']}" + (f"-{array}" if array else "")
    elastic = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if elastic != "none":
        return f"elastic-{elastic}"
    if _several_ranks():
        return f"{_timestamp(_launcher_start_time())}-p{os.getppid()}"
    return _timestamp(_STARTED)


def run_dir(parent: str) -> str:
    """This run's folder under `parent`, never another run's: a single process reserves a new folder atomically
    (`<time>`, else `<time>-2`, ...), so two runs started in the same second get two folders. Ranks of one
    launch, and a requeued SLURM job, share theirs by name (`run_id`). Reserved once per process."""
    name = run_id()
    if name.startswith(("slurm-", "elastic-")) or _several_ranks():
        return str(Path(parent) / name)
    if parent not in _RESERVED:
        Path(parent).mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 10_000):
            candidate = Path(parent) / (name if attempt == 1 else f"{name}-{attempt}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            _RESERVED[parent] = str(candidate)
            break
    return _RESERVED[parent]


def release_run_dir(folder: str | Path) -> bool:
    """Remove the folder of a run that stopped before it wrote results (a config error): it holds only Hydra's
    record, the resolved config and the log's error line. Logging into it stops first. Other runs' reservations
    stand, being other names. True if removed."""
    folder = Path(folder)
    if not folder.is_dir() or any(path.name not in BEFORE_RESULTS for path in folder.iterdir()):
        return False
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder:
            root.removeHandler(handler)
            handler.close()
    shutil.rmtree(folder, ignore_errors=True)
    return True


def _several_ranks() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _launcher_start_time() -> float:
    """Start time of the parent process, from /proc (Linux); elsewhere the parent's pid keeps ranks together."""
    try:
        stat = Path(f"/proc/{os.getppid()}/stat").read_text()
        boot = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
    except (OSError, StopIteration):
        return float(os.getppid())
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, counted after the command name
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(seconds))


def sweep_id() -> str:
    """A multirun folder name that every job of the sweep agrees on, also jobs in other processes.

    The sweep's callback exports SWEEP_ID_ENV in the launching process before any job starts;
    submitit jobs (local subprocesses, SLURM jobs, requeued ones) inherit it.
    """
    return os.environ.get(SWEEP_ID_ENV) or run_id()


def study_name(experiment: str, debug: str | None, preset: str) -> str:
    """An Optuna study's name: its experiment's, but `<preset>-debug` (`optuna-debug`) under `debug=...`, whose
    runs all go to the experiment `debug`: a rehearsal never joins the real study, nor is it called "debug"."""
    return f"{preset}-debug" if debug else experiment


def is_main_rank() -> bool:
    """True on the process that writes files; read from the launcher's environment, before any Accelerator.

    torchrun and accelerate set RANK/LOCAL_RANK; a SLURM job with one task per GPU sets SLURM_PROCID.
    """
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))
    return rank == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


_STARTED = time.time()
# the lock a run holds in its folder while it works there (cellexp.tracking.run_folder)
RUN_LOCK = ".run.lock"
# what a run folder holds before the run writes results: Hydra's record, the resolved config, the log and the lock
BEFORE_RESULTS = (".hydra", "config.yaml", "train.log", RUN_LOCK)
_RESERVED: dict[str, str] = {}
# What a sweep's jobs learn from the process that launched them, through the environment (see cellexp.sweeps.callback).
SWEEP_ID_ENV = "CELLEXP_SWEEP_ID"
PARENT_RUN_ENV = "CELLEXP_MLFLOW_PARENT_RUN_ID"
# the overrides that vary across the sweep's jobs (comma lists, ranges, the sweeper's search space)
SWEEP_KEYS_ENV = "CELLEXP_SWEEP_KEYS"

# What a config may build (Hydra 1.4's execution whitelist): exactly the callables that conf/ names for a run's
# models, optimizers and schedules (tests/test_hostile_runs.py checks that the list and conf/ agree); no module
# prefix, since a module tree such as torch.* holds loaders that unpickle files.
BUILDABLE = (
    "cellexp.models.backbones.timm_backbone",
    "cellexp.models.backbones.hybrid_backbone",
    "cellexp.models.backbones3d.efficientnet3d",
    "cellexp.models.backbones3d.resnet3d",
    "cellexp.models.heads.LinearHead",
    "cellexp.models.heads.MLPHead",
    "cellexp.models.heads.PublishedMLPHead",
    "cellexp.models.tensor_network.graph_head",
    "cellexp.models.elegans_published.published_graph_head",
    "cellexp.models.dino.DinoHead",
    "cellexp.models.mil.GatedAttentionMIL",
    "torch.optim.AdamW",
    "torch.optim.SGD",
    "torch.optim.lr_scheduler.ConstantLR",
    "torch.optim.lr_scheduler.CosineAnnealingLR",
    "torch.optim.lr_scheduler.StepLR",
    "cellexp.engine.schedulers.PlateauOnMetric",
    "cellexp.engine.dino.DinoSchedules",
)


# What those callables return (a backbone's timm or MONAI model, a head's module), which Hydra authorizes as well; a
# config cannot name these itself, since `build` checks every target against BUILDABLE first.
RETURNED = (
    "timm.models.*",
    "cellexp.models.*",
    "cellexp.engine.*",
    "monai.networks.nets.efficientnet.EfficientNet",
    "monai.networks.nets.efficientnet.EfficientNetBN",
    "monai.networks.nets.resnet.ResNet",
)


def build(node, *args, **kwargs):
    """`hydra.utils.instantiate` of `node` resolved, after every `_target_` in it (list items, `_args_` and nested
    kwargs included) is found in BUILDABLE: a config naming anything else is refused by name, not run. Hydra's own
    whitelist is reset to these (the app's, for its plugins, does not reach a run's objects)."""
    from hydra.errors import InstantiationException
    from hydra.utils import execution_whitelist, instantiate

    from cellexp.errors import ConfigError

    origin = node._get_full_key(None) if OmegaConf.is_config(node) else ""
    tree = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    for key, value in walk(tree):
        if key.rsplit(".", 1)[-1] == "_target_" and value not in BUILDABLE:
            where = ".".join(filter(None, (origin, key)))
            raise ConfigError(f"{where}={value!r} is not built: cellexp builds only {', '.join(BUILDABLE)}")
    allowed = execution_whitelist((*BUILDABLE, *RETURNED), reset=True)
    try:
        return instantiate(tree, *args, _execution_whitelist_=allowed, **kwargs)
    except InstantiationException as err:
        raise ConfigError(f"{origin or 'config'}: {' '.join(str(err).split())}") from None


def walk(node, where: str = ""):
    """(dotted key, value) for every node and leaf below a plain config tree; list items as `key[i]`."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            yield path, value
            yield from walk(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield f"{where}[{i}]", value
            yield from walk(value, f"{where}[{i}]")


for _name, _fn in {
    "cellexp.project_root": project_root,
    "cellexp.run_id": run_id,
    "cellexp.run_dir": run_dir,
    "cellexp.sweep_id": sweep_id,
    "cellexp.study_name": study_name,
    # Hydra writes .hydra/ on every rank; only the main rank should.
    "cellexp.main_rank_only": lambda value: value if is_main_rank() else None,
    # a requeued SLURM job continues from its newest checkpoint instead of starting over
    "cellexp.auto_if_requeued": lambda: "auto" if requeued() else None,
}.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_resolver(_name, _fn)
