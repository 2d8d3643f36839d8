rule figures:
    input:
        summary="results/metrics/summary.json",
        per_sample="results/metrics/per_sample.parquet",
        runs=expand("results/runs/{run_id}/train_log.parquet", run_id=RUNS),
    output:
        table_csv=report(
            "results/tables/table2.csv",
            caption="../report/table2.rst",
            category="Claims",
        ),
        table_md="results/tables/table2.md",
        table_tex="results/tables/table2.tex",
        table_provenance="results/tables/table2.provenance.json",
        controls_csv=report(
            "results/tables/controls.csv",
            caption="../report/controls.rst",
            category="Controls",
        ),
        controls_md="results/tables/controls.md",
        controls_tex="results/tables/controls.tex",
        controls_provenance="results/tables/controls.provenance.json",
        p1=report(
            "results/figures/p1_weight_vs_t.png",
            caption="../report/p1.rst",
            category="Figures",
        ),
        spread=report(
            "results/figures/weight_spread.png",
            caption="../report/spread.rst",
            category="Figures",
        ),
        metrics=report(
            "results/figures/metrics_by_group.png",
            caption="../report/metrics.rst",
            category="Figures",
        ),
        spectrograms=directory("results/figures/spectrograms"),
    log:
        "results/logs/figures/figures.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        python=PYTHON,
        run_dirs=expand("results/runs/{run_id}", run_id=RUNS),
    shell:
        "{params.python} scripts/figures.py --summary {input.summary} --per-sample {input.per_sample} "
        "--runs {params.run_dirs} --figures-dir results/figures --tables-dir results/tables "
        "> {log} 2>&1"
