# Data stages: study data section -> corpus -> tokenizer -> token shards (shared by every run of the study).


localrules:
    data_config,
    export_tasks,


rule data_config:
    output:
        f"{DATA}/config.yaml",
    params:
        config=DATA_CONFIG,
    log:
        f"{LOGS}/data_config.log",
    conda:
        SOFTWARE
    script:
        "../scripts/write_config.py"


rule corpus:
    input:
        config=f"{DATA}/config.yaml",
    output:
        train=f"{DATA}/corpus/train.jsonl.gz",
        val=f"{DATA}/corpus/val.jsonl.gz",
        meta=f"{DATA}/corpus/corpus.json",
    params:
        out=parent("meta"),
    log:
        f"{LOGS}/corpus.log",
    conda:
        SOFTWARE
    shell:
        "python -m rom corpus --config {input.config} --out {params.out} > {log} 2>&1"


rule tokenizer:
    input:
        config=f"{DATA}/config.yaml",
        corpus=rules.corpus.output.meta,
    output:
        tokenizer=f"{DATA}/tokenizer.json",
    params:
        corpus=parent("corpus"),
    log:
        f"{LOGS}/tokenizer.log",
    conda:
        SOFTWARE
    shell:
        "python -m rom train-tokenizer --config {input.config} --corpus {params.corpus}"
        " --out {output.tokenizer} > {log} 2>&1"


rule tokenize:
    input:
        config=f"{DATA}/config.yaml",
        corpus=rules.corpus.output.meta,
        tokenizer=rules.tokenizer.output.tokenizer,
    output:
        train=f"{DATA}/tokens/train.bin",
        train_meta=f"{DATA}/tokens/train.json",
        val=f"{DATA}/tokens/val.bin",
        val_meta=f"{DATA}/tokens/val.json",
    params:
        corpus=parent("corpus"),
        out=parent("train"),
    log:
        f"{LOGS}/tokenize.log",
    conda:
        SOFTWARE
    shell:
        "python -m rom tokenize --config {input.config} --corpus {params.corpus} --tokenizer {input.tokenizer}"
        " --out {params.out} > {log} 2>&1"


rule export_tasks:
    output:
        tasks=directory(f"{DATA}/tasks"),
    params:
        tasks=",".join(STUDY["downstream"]["tasks"]),
    log:
        f"{LOGS}/export_tasks.log",
    conda:
        SOFTWARE
    shell:
        "python -m rom export-tasks --tasks {params.tasks} --out {output.tasks} > {log} 2>&1"
