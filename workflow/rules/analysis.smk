# Analysis stages (torch-free, light): run records -> tidy table -> fits -> claims -> figures / tables -> report.
# In regenerate mode these are the only rules, and the records are the committed ones (see common.smk).


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
        table=f"{ANALYSIS}/table.csv",
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
        fits=f"{ANALYSIS}/fits.json",
    params:
        convention=FIT["param_convention"],
        flops=FIT["flop_convention"],
        bootstrap=FIT["bootstrap"],
        seed=FIT["seed"],
        ci=FIT["ci_level"],
    log:
        f"{LOGS}/analysis/fit.log",
    conda:
        SOFTWARE
    shell:
        "python -m analysis fit --table {input.table} --param-convention {params.convention}"
        " --flop-convention {params.flops} --bootstrap {params.bootstrap} --seed {params.seed}"
        " --ci-level {params.ci} --out {output.fits} > {log} 2>&1"


rule claims:
    input:
        table=rules.collect.output.table,
        fits=rules.fit.output.fits,
    output:
        claims=f"{ANALYSIS}/claims.json",
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
        manifest=f"{ANALYSIS}/figures/figures.json",
        png=[
            report(f"{ANALYSIS}/figures/{name}.png", caption=f"../report/{name}.rst", category="Figures")
            for name in FIGURES
        ],
        pdf=[f"{ANALYSIS}/figures/{name}.pdf" for name in FIGURES],
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
            report(f"{ANALYSIS}/tables/{name}.csv", caption="../report/tables.rst", category="Tables")
            for name in TABLES
        ],
        md=[f"{ANALYSIS}/tables/{name}.md" for name in TABLES],
        tex=[f"{ANALYSIS}/tables/{name}.tex" for name in TABLES],
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
        html=report(f"{ANALYSIS}/report.html", caption="../report/report.rst", category="Report"),
        md=f"{ANALYSIS}/report.md",
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
