rule sample_run:
    input:
        unpack(adapter_files),
        model=f"{BASE_DIR}/model.safetensors",
        model_config=f"{BASE_DIR}/model_config.json",
        base_run=f"{BASE_DIR}/run.json",
        latents=LATENTS_DIR,
    output:
        # the run's WAVs and their index.parquet: the folder is the declared output, so that
        # the WAVs travel through storage where jobs share no filesystem (docs/cloud.md)
        samples=directory("results/samples/{sampled}"),
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
        run_dir=lambda wildcards, input: (
            []
            if wildcards.sampled == BASE_RUN
            else ["--run-dir", os.path.dirname(input.adapter)]
        ),
        base_dir=lambda wildcards, input: os.path.dirname(input.model),
    shell:
        "{params.python:q} -m eisbach.gpu_slots --gpus {resources.gpu:q} -- "
        "scripts/sample.py run --run-id {wildcards.sampled:q} {params.run_dir:q} "
        "--base-dir {params.base_dir:q} --latents-dir {input.latents:q} "
        "--sample-json {params.sample:q} --backend-json {params.backend:q} "
        "--out-dir {output.samples:q} > {log:q} 2>&1"


rule sample_index:
    input:
        samples=SAMPLE_DIRS,
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
        indexes=lambda wildcards, input: [
            os.path.join(d, "index.parquet") for d in input.samples
        ],
    shell:
        "{params.python:q} scripts/sample.py gather {params.indexes:q} --out {output.index:q} "
        "> {log:q} 2>&1"
