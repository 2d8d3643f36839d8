# config/paper-smoke.yaml only: the local stand-ins for what the paper profile downloads (a
# Medium-shaped Stable Audio 3 test model, the MusicCaps CSV and stereo clips named by its
# ytids), written where that profile's data and backend sections read them.
SMOKE = config["paper_smoke"]


# The two sources are params, not inputs: the DAG (and its dry run) builds where they are
# absent, and the job names the missing one when it runs.
rule paper_smoke_inputs:
    output:
        csv=config["data"]["musiccaps_csv"],
        audio=directory(config["data"]["audio_dir"]),
        model=directory(config["backend"]["pretrained"]),
    log:
        "results/logs/paper_smoke_inputs.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        python=PYTHON,
        csv=SMOKE["musiccaps_csv"],
        music=SMOKE["music_dir"],
        limit=config["data"]["limit"],
        out=lambda wildcards, output: os.path.dirname(output.csv),
    shell:
        "{params.python:q} scripts/paper_smoke.py --csv {params.csv:q} --music {params.music:q} "
        "--out {params.out:q} --limit {params.limit:q} > {log:q} 2>&1"
