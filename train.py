"""The one entry point: compose conf/ with Hydra, run the task, return its objective to sweepers."""

import logging
import sys

import hydra
from omegaconf import DictConfig

import cellexp
from cellexp.engine.preemption import Preempted

log = logging.getLogger("cellexp")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        return cellexp.run(cfg)
    except Preempted as stop:
        log.warning("%s", stop)
        sys.exit(0)
    except cellexp.CellexpError as err:
        log.error("%s", err)
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
