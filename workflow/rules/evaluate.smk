rule evaluate:
    input:
        index="results/samples/index.parquet",
        manifest="results/data/manifest.parquet",
        runs=expand("results/runs/{run_id}/run.json", run_id=RUNS),
        heldout=expand("results/runs/{run_id}/heldout_loss.parquet", run_id=RUNS),
    output:
        per_sample="results/metrics/per_sample.parquet",
        per_prompt="results/metrics/per_prompt.parquet",
        reference="results/metrics/reference.parquet",
        summary="results/metrics/summary.json",
    log:
        "results/logs/evaluate/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate/evaluate.tsv"
    threads: config["evaluate"].get("threads", 1)
    resources:
        mem_mb=stage_resources("evaluate")["mem_mb"],
        runtime=stage_resources("evaluate")["runtime"],
    params:
        python=PYTHON,
        evaluate=section_arg("evaluate"),
        run_dirs=expand("results/runs/{run_id}", run_id=RUNS),
    shell:
        "{params.python:q} scripts/evaluate.py --index {input.index:q} --manifest {input.manifest:q} "
        "--runs {params.run_dirs:q} --evaluate-json {params.evaluate:q} --out-dir results/metrics "
        "--threads {threads:q} > {log:q} 2>&1"
