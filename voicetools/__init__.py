"""The project's tools: clients, benchmarks and the harness that starts the
real system. Each tool runs as ``python -m voicetools.<tool>`` and as the
console command ``voicestream-<tool>`` (pyproject.toml's [project.scripts]):

    replay         stream frame directories to a balancer, one account each
    split          cut WAV files into the 100 ms frames clients stream
    tail           an account's frame lines from the shared PostgreSQL
    timeline       who spoke when in an account's log: PNG, RTTM, summary
    bench          load benchmark (the package bench/)
    faults         kill -9 / SIGTERM a worker while accounts stream
    calibrate      speaker verification's EER and thresholds
    conversation   who-spoke-when on conversations (the package conversation/)
    vad_noise      VAD in noise (the package vad_noise/)
    footprint      one worker's memory and start-up time per encoder
    encoder_times  encoder time per window, torch against onnxruntime
    postgres       a throwaway PostgreSQL server
    options_doc    the option tables of docs/configuration.md

Libraries they share: cluster (workers and a balancer as real processes on
free ports; the integration tests use it too), percentile (the project's one
percentile) and paths (where the tools look by default).

The served packages (balancer, worker, voicestream) never import this one:
a runtime install needs none of the tools' dependencies (the "scripts" extra).
"""
