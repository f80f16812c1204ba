"""``python -m birdvision.shards data.root=PATH|data.manifest=FILE output=DIR``: photos -> LitData shards.

Train from them with ``python -m birdvision.fit recipe=NAME data.shards=DIR`` (a folder, or the same
layout copied to object storage). The samples and splits are found exactly as ``fit`` finds them
(folders, ``birds.csv``, or an audit's manifest), so a fit from shards sees the same samples as a
fit from the folder; the shard set carries its class list and manifest digest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from birdvision.config import ConfigError, DataConfig, bounded, parse_cli
from birdvision.console import console, run_cli, setup_logging
from birdvision.data.manifest import DataSourceError, ManifestError
from birdvision.data.splits import LeakageError


@dataclass
class ShardsConfig:
    """Everything ``python -m birdvision.shards`` reads (``data.*`` as in fit)."""

    output: str | None = None  # a new, empty folder
    chunk_mb: int = bounded(64, ge=1, le=4096)  # LitData chunk size
    seed: int = bounded(42, ge=0, lt=2**32)  # splits made here when the data has none (use fit's seed); train order
    data: DataConfig = field(default_factory=DataConfig)  # the samples, found as fit finds them


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m birdvision.shards``."""

    def body() -> int:
        cfg = parse_cli(ShardsConfig, argv, preset_key="preset", prog="birdvision.shards",
                        description=__doc__.strip().splitlines()[0])
        setup_logging()
        if not cfg.output:
            raise ConfigError("output=DIR is required (a new folder for the shards)")
        if cfg.data.mode != "image":
            raise ConfigError("data.mode=image only: shards hold photos")
        from birdvision.data.build import discover_samples

        try:
            from birdvision.data.photos.shards import write_shards
        except ImportError as e:
            raise ConfigError(str(e)) from None
        from birdvision.data.splits import check_splits

        found = discover_samples(cfg)
        for path, why in found.skipped:
            console.log(f"left out {path}: {why}")
        check_splits(found.samples, found.origin)
        meta = write_shards(found.samples, cfg.output, chunk_mb=cfg.chunk_mb, seed=cfg.seed)
        console.print(f"shards of {found.origin} in {cfg.output}: {meta['counts']}, {len(meta['classes'])} classes, "
                      f"manifest digest {meta['manifest_digest'][:12]}")
        return 0

    return run_cli(body, (ConfigError, DataSourceError, LeakageError, ManifestError))


if __name__ == "__main__":
    raise SystemExit(main())
