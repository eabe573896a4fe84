# Analysis stages (torch-free, light): run records -> tidy table -> fits -> claims -> figures / tables -> report.
# In regenerate mode these are the only rules, and the records are the committed ones (see common.smk).
# Output names and captions come from analysis/outputs.py (imported in common.smk as ANALYSIS_NAMES).


localrules:
    collect,
    fit,
    claims,
    figures,
    tables,
    report,


rule collect:
    input:
        records=records(),
    output:
        table=f"{ANALYSIS}/{ANALYSIS_NAMES.TABLE_CSV}",
    log:
        f"{LOGS}/analysis/collect.log",
    conda:
        SOFTWARE
    shell:
        "python -m analysis collect --records {input.records} --out {output.table} > {log} 2>&1"


rule fit:
    input:
        table=rules.collect.output.table,
    output:
        fits=f"{ANALYSIS}/{ANALYSIS_NAMES.FITS_JSON}",
    params:
        convention=FIT["param_convention"],
        flops=FIT["flop_convention"],
        bootstrap=FIT["bootstrap"],
        seed=FIT["seed"],
        ci=FIT["ci_level"],
    log:
        f"{LOGS}/analysis/fit.log",
    # the fits are independent: one process per thread (the numbers do not depend on the count); Snakemake
    # lowers this to --cores where fewer are given
    threads: 8
    conda:
        SOFTWARE
    shell:
        "python -m analysis fit --table {input.table} --param-convention {params.convention}"
        " --flop-convention {params.flops} --bootstrap {params.bootstrap} --seed {params.seed}"
        " --ci-level {params.ci} --workers {threads} --out {output.fits} > {log} 2>&1"


rule claims:
    input:
        table=rules.collect.output.table,
        fits=rules.fit.output.fits,
    output:
        claims=f"{ANALYSIS}/{ANALYSIS_NAMES.CLAIMS_JSON}",
    params:
        tolerance=FIT["context_tolerance"],
        margin=FIT["downstream_margin"],
    log:
        f"{LOGS}/analysis/claims.log",
    conda:
        SOFTWARE
    shell:
        "python -m analysis claims --table {input.table} --fits {input.fits}"
        " --context-tolerance {params.tolerance} --downstream-margin {params.margin}"
        " --out {output.claims} > {log} 2>&1"


rule figures:
    input:
        table=rules.collect.output.table,
        fits=rules.fit.output.fits,
        claims=rules.claims.output.claims,
    output:
        manifest=f"{ANALYSIS}/figures/{ANALYSIS_NAMES.FIGURES_MANIFEST}",
        png=[
            report(
                f"{ANALYSIS}/figures/{name}.png",
                caption="../report/figures.rst",
                category="Figures",
                labels=report_labels(name, ANALYSIS_NAMES.FIGURES),
            )
            for name in FIGURES
        ],
        pdf=ANALYSIS_NAMES.figure_files(f"{ANALYSIS}/figures", "pdf"),
    params:
        out=parent("manifest"),
    log:
        f"{LOGS}/analysis/figures.log",
    conda:
        SOFTWARE
    shell:
        "python -m analysis figures --table {input.table} --fits {input.fits} --claims {input.claims}"
        " --out {params.out} > {log} 2>&1"


rule tables:
    input:
        table=rules.collect.output.table,
        fits=rules.fit.output.fits,
        claims=rules.claims.output.claims,
    output:
        csv=[
            report(
                f"{ANALYSIS}/tables/{name}.csv",
                caption="../report/tables.rst",
                category="Tables",
                labels=report_labels(name, ANALYSIS_NAMES.TABLES),
            )
            for name in TABLES
        ],
        md=ANALYSIS_NAMES.table_files(f"{ANALYSIS}/tables", "md"),
        tex=ANALYSIS_NAMES.table_files(f"{ANALYSIS}/tables", "tex"),
    params:
        out=lambda wildcards, output: str(Path(output.csv[0]).parent),
    log:
        f"{LOGS}/analysis/tables.log",
    conda:
        SOFTWARE
    shell:
        "python -m analysis tables --table {input.table} --fits {input.fits} --claims {input.claims}"
        " --out {params.out} > {log} 2>&1"


rule report:
    input:
        table=rules.collect.output.table,
        fits=rules.fit.output.fits,
        claims=rules.claims.output.claims,
        figures=rules.figures.output.manifest,
        tables=rules.tables.output.md,
    output:
        html=report(f"{ANALYSIS}/{ANALYSIS_NAMES.REPORT_HTML}", caption="../report/report.rst", category="Report"),
        md=f"{ANALYSIS}/{ANALYSIS_NAMES.REPORT_MD}",
    params:
        figures=parent("figures"),
        title=f"RoM scaling study: {STUDY['study']}",
    log:
        f"{LOGS}/analysis/report.log",
    conda:
        SOFTWARE
    shell:
        "python -m analysis report --table {input.table} --fits {input.fits} --claims {input.claims}"
        " --figures {params.figures} --title {params.title:q} --out {output.html} --markdown {output.md}"
        " > {log} 2>&1"
