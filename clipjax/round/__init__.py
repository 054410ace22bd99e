"""The round: one federated round of any method as an `(init, apply)` algorithm.

`algorithm` (the round's stages in order), `settings` (what a round needs, typed), `cohort`
(who takes part and what each population client carries), `chunks` (the chunked train-and-sum),
`record` (the metrics row, `docs/metrics.md`) and `build` (spec + data + model -> round).
"""
