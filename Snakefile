# RoM toolkit pipeline: corpus -> tokenizer -> tokens -> train -> eval / flops / downstream -> record
# -> collect -> fit -> claims -> figures / tables -> report, for one study (config/studies/<study>.yaml).
#
#   snakemake --cores 2                                   the default (tiny) study, CPU
#   snakemake --cores 16 --resources gpu=1 --config study=gpu
#   snakemake --profile profiles/slurm --config study=paper
#   snakemake --cores 2 --config study=gpu regenerate=true   analysis only, from committed run records
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


validate(config, "workflow/schemas/config.schema.yaml")
config["regenerate"] = str(config["regenerate"]).lower() in ("true", "yes", "1")


include: "workflow/rules/common.smk"


localrules:
    all,
    regenerate,


rule all:
    input:
        ANALYSIS_OUTPUTS,
    default_target: True


rule regenerate:
    input:
        regenerate_target,


if not config["regenerate"]:

    include: "workflow/rules/data.smk"
    include: "workflow/rules/train.smk"


include: "workflow/rules/analysis.smk"
