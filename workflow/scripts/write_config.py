"""Write one resolved RunConfig as YAML (run by the rules' `script:` directive, never imported).

The Snakefile resolves each run of a study (study defaults + the run's own sections) at DAG-build time and
passes the mapping as ``params.config``; this script re-validates it with rom.config (torch-free), checks that
the run id matches the directory it is written to, and saves it atomically. (No `from __future__` import:
Snakemake prepends its own preamble to this file.)
"""

import os
import sys

# Snakemake runs this from a copy under .snakemake/scripts/ with the clone's root as working directory; put
# the root on the path so that `rom` resolves there too under --sdm conda (where rom-toolkit is not installed).
sys.path.insert(0, os.getcwd())

from rom.config import run_config_from_dict, save_yaml  # noqa: E402


def write_config(config: dict, out: str, expected_run_id: "str | None", log: str) -> None:
    cfg = run_config_from_dict(config)
    if expected_run_id is not None and cfg.run_id != expected_run_id:
        raise SystemExit(f"{out}: resolved run id {cfg.run_id} does not match its directory {expected_run_id}")
    save_yaml(cfg, out)
    with open(log, "w") as f:
        print(f"wrote {out} (run id {cfg.run_id})", file=f)


smk = snakemake  # noqa: F821 (injected by Snakemake's script directive)
write_config(dict(smk.params.config), str(smk.output[0]), smk.wildcards.get("run_id"), str(smk.log[0]))
