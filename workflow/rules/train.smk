rule pretrain_base:
    input:
        latents=LATENTS_DIR,
    output:
        model=f"{BASE_DIR}/model.safetensors",
        model_config=f"{BASE_DIR}/model_config.json",
        log=f"{BASE_DIR}/train_log.parquet",
        run=f"{BASE_DIR}/run.json",
    log:
        f"results/logs/train/base-{BACKEND}.log",
    benchmark:
        f"results/benchmarks/pretrain_base/base-{BACKEND}.tsv"
    threads: config.get("base", {}).get("threads", 1)
    resources:
        mem_mb=train_resources("base")["mem_mb"],
        runtime=train_resources("base")["runtime"],
        gpu=train_resources("base")["gpu"],
    params:
        python=PYTHON,
        torchrun=torchrun("base"),
        backend=as_arg(config["backend"]),
        base=section_arg("base"),
        latents_dir=lambda wildcards, input: input.latents,
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        "{params.python:q} -m eisbach.gpu_slots --gpus {resources.gpu:q} -- {params.torchrun:q} "
        "scripts/train.py base "
        "--latents-dir {params.latents_dir:q} "
        "--backend-json {params.backend:q} --train-json {params.base:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule finetune:
    input:
        latents=LATENTS_DIR,
        model=f"{BASE_DIR}/model.safetensors",
        # read beside the weights: their architecture, and the sha256 they are verified against
        model_config=f"{BASE_DIR}/model_config.json",
        base_run=f"{BASE_DIR}/run.json",
        matched=matched_run_json,
    output:
        adapter="results/runs/{run_id}/adapter_model.safetensors",
        adapter_config="results/runs/{run_id}/adapter_config.json",
        log="results/runs/{run_id}/train_log.parquet",
        heldout="results/runs/{run_id}/heldout_loss.parquet",
        run="results/runs/{run_id}/run.json",
    log:
        "results/logs/train/{run_id}.log",
    benchmark:
        "results/benchmarks/finetune/{run_id}.tsv"
    threads: config["train"]["threads"]
    resources:
        mem_mb=train_resources("train")["mem_mb"],
        runtime=train_resources("train")["runtime"],
        gpu=train_resources("train")["gpu"],
    params:
        python=PYTHON,
        torchrun=torchrun("train"),
        backend=as_arg(config["backend"]),
        train=section_arg("train"),
        scheme=run_param("scheme"),
        adapter=run_param("adapter"),
        seed=lambda wildcards: RUNS[wildcards.run_id]["seed"],
        # argv items, each quoted in the shell line: empty without a matched run
        match=lambda wildcards, input: (
            ["--match-run", input.matched[0]] if input.matched else []
        ),
        latents_dir=lambda wildcards, input: input.latents,
        base_dir=lambda wildcards, input: os.path.dirname(input.model),
        out_dir=lambda wildcards, output: os.path.dirname(output.run),
    shell:
        "{params.python:q} -m eisbach.gpu_slots --gpus {resources.gpu:q} -- {params.torchrun:q} "
        "scripts/train.py adapter "
        "--latents-dir {params.latents_dir:q} "
        "--backend-json {params.backend:q} --train-json {params.train:q} "
        "--base-dir {params.base_dir:q} --scheme-json {params.scheme:q} "
        "--adapter-json {params.adapter:q} --seed {params.seed:q} {params.match:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"
