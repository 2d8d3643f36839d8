rule sample_run:
    input:
        adapter_files,
        model=f"{BASE_DIR}/model.safetensors",
        latents=f"{LATENTS_DIR}/latents_manifest.json",
    output:
        index="results/samples/{sampled}/index.parquet",
    log:
        "results/logs/sample/{sampled}.log",
    benchmark:
        "results/benchmarks/sample_run/{sampled}.tsv"
    threads: config["sample"]["threads"]
    resources:
        mem_mb=stage_resources("sample")["mem_mb"],
        runtime=stage_resources("sample")["runtime"],
        gpu=stage_resources("sample")["gpu"],
    params:
        python=PYTHON,
        backend=as_arg(config["backend"]),
        sample=section_arg("sample"),
        # argv items, each quoted in the shell line: empty for the base model
        run_dir=lambda wildcards: (
            []
            if wildcards.sampled == BASE_RUN
            else ["--run-dir", f"results/runs/{wildcards.sampled}"]
        ),
        latents_dir=lambda wildcards, input: os.path.dirname(input.latents),
        base_dir=lambda wildcards, input: os.path.dirname(input.model),
        out_dir=lambda wildcards, output: os.path.dirname(output.index),
    shell:
        "{params.python:q} -m eisbach.gpu_slots --gpus {resources.gpu:q} -- "
        "scripts/sample.py run --run-id {wildcards.sampled:q} {params.run_dir:q} "
        "--base-dir {params.base_dir:q} --latents-dir {params.latents_dir:q} "
        "--sample-json {params.sample:q} --backend-json {params.backend:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule sample_index:
    input:
        expand("results/samples/{sampled}/index.parquet", sampled=SAMPLED_RUNS),
    output:
        index="results/samples/index.parquet",
    log:
        "results/logs/sample/index.log",
    benchmark:
        "results/benchmarks/sample_index/index.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        python=PYTHON,
    shell:
        "{params.python:q} scripts/sample.py gather {input:q} --out {output.index:q} > {log:q} 2>&1"
