# Shards are written one by one and recorded in latents_progress.json beside them; they are not
# declared outputs, so that a rerun after a failure or kill resumes at the first unfinished shard.
rule latents:
    input:
        manifest="results/data/manifest.parquet",
    output:
        summary=f"{LATENTS_DIR}/latents_manifest.json",
    log:
        f"results/logs/latents/{BACKEND}.log",
    benchmark:
        f"results/benchmarks/latents/{BACKEND}.tsv"
    threads: 1
    resources:
        mem_mb=stage_resources("latents")["mem_mb"],
        runtime=stage_resources("latents")["runtime"],
        gpu=stage_resources("latents")["gpu"],
    params:
        python=PYTHON,
        backend=as_arg(config["backend"]),
        latents=section_arg("latents"),
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "{params.python:q} -m eisbach.gpu_slots --gpus {resources.gpu:q} -- "
        "scripts/latents.py --manifest {input.manifest:q} "
        "--backend-json {params.backend:q} --latents-json {params.latents:q} "
        "--out-dir {params.out_dir:q} --threads {threads:q} > {log:q} 2>&1"
