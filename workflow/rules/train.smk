# Per-run stages: config -> train -> eval / flops / downstream -> final record.
# Checkpoints (RUN_DIR/checkpoint/, model.pt) are deliberately not outputs: Snakemake deletes the outputs of a
# failed job, and a killed or timed-out training job must stay resumable (`rom train` resumes by itself).


localrules:
    run_config,
    record,


rule run_config:
    output:
        config=f"{RUN}/config.yaml",
    params:
        config=lambda wildcards: RUNS[wildcards.run_id],
    log:
        f"{LOGS}/run_config/{{run_id}}.log",
    conda:
        SOFTWARE
    script:
        "../scripts/write_config.py"


rule train:
    input:
        config=rules.run_config.output.config,
        train_tokens=rules.tokenize.output.train,
        val_tokens=rules.tokenize.output.val,
    output:
        train=f"{RUN}/train.json",
    params:
        env=torch_env,
        launcher=train_launcher,
        data=parent("val_tokens"),
        run_dir=parent("train"),
        on_divergence=on_divergence(),
    resources:
        gpu=1,  # a default; profiles override it (profiles/slurm: 8 for train)
    log:
        f"{LOGS}/train/{{run_id}}.log",
    benchmark:
        f"{OUT}/benchmarks/train/{{run_id}}.tsv"
    conda:
        SOFTWARE
    shell:
        "{params.env} {params.launcher} train --config {input.config} --set train.threads={threads}"
        " --data {params.data} --out {params.run_dir} {params.on_divergence} > {log} 2>&1"


rule eval:
    # above training (priority 0): a GPU slot freed by a finished training goes to scoring a trained run
    # before the next training starts, so a sitting cut short leaves whole records rather than
    # trained-but-unscored runs (sitting 7 of the miniature study ended with five of those)
    priority: POST_TRAIN_PRIORITY
    input:
        train=rules.train.output.train,
        val_tokens=rules.tokenize.output.val,
    output:
        eval=f"{RUN}/eval.json",
    params:
        env=torch_env,
        data=parent("val_tokens"),
        run_dir=parent("train"),
    resources:
        gpu=1,  # a default; profiles override it (profiles/slurm: 8 for train)
    log:
        f"{LOGS}/eval/{{run_id}}.log",
    benchmark:
        f"{OUT}/benchmarks/eval/{{run_id}}.tsv"
    conda:
        SOFTWARE
    shell:
        "{params.env} python -m rom eval --run {params.run_dir} --data {params.data} --out {output.eval} > {log} 2>&1"


rule flops:
    # see rule eval
    priority: POST_TRAIN_PRIORITY
    input:
        train=rules.train.output.train,
    output:
        flops=f"{RUN}/flops.json",
    params:
        env=torch_env,
        run_dir=parent("train"),
    log:
        f"{LOGS}/flops/{{run_id}}.log",
    conda:
        SOFTWARE
    shell:
        "{params.env} python -m rom flops --run {params.run_dir} --out {output.flops} > {log} 2>&1"


rule downstream:
    # see rule eval
    priority: POST_TRAIN_PRIORITY
    input:
        train=rules.train.output.train,
        tasks=rules.export_tasks.output.tasks,
        tokenizer=rules.tokenizer.output.tokenizer,
    output:
        downstream=f"{RUN}/downstream.json",
    params:
        env=torch_env,
        run_dir=parent("train"),
        tasks=",".join(STUDY["downstream"]["tasks"]),
        limit=downstream_limit(),
    resources:
        gpu=1,  # a default; profiles override it (profiles/slurm: 8 for train)
    log:
        f"{LOGS}/downstream/{{run_id}}.log",
    benchmark:
        f"{OUT}/benchmarks/downstream/{{run_id}}.tsv"
    conda:
        SOFTWARE
    shell:
        "{params.env} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m rom downstream --run {params.run_dir}"
        " --tasks {input.tasks} --task-list {params.tasks} {params.limit} --tokenizer {input.tokenizer}"
        " --out {output.downstream} > {log} 2>&1"


rule record:
    # see rule eval
    priority: POST_TRAIN_PRIORITY
    input:
        record_parts,
    output:
        final=f"{RUN}/final.json",
    params:
        run_dir=parent("final"),
        require=lambda wildcards, input: ",".join(Path(p).stem for p in input if Path(p).stem != "train"),
    log:
        f"{LOGS}/record/{{run_id}}.log",
    conda:
        SOFTWARE
    shell:
        "python -m rom record --run {params.run_dir} --require {params.require} --out {output.final} > {log} 2>&1"
