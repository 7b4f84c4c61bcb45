rule psf:
    output:
        npz=f"{RESULTS}/{{sample}}/psf/psf.npz",
        json=f"{RESULTS}/{{sample}}/psf/psf.json",
    params:
        kind=config["psf"]["kind"],
        params=as_json(config["psf"]["params"]),
        mode=config["psf"]["mode"],
    log:
        "logs/{sample}/psf.log",
    threads: 1
    shell:
        "isonet psf --out-npz {output.npz} --out-json {output.json} --kind {params.kind}"
        " --params {params.params} --mode {params.mode} > {log} 2>&1"
