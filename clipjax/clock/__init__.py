"""The virtual clock (DESIGN 2.1): what each client really did -> seconds.

`devices` (device tiers and every client's device), `calibration` (where the fast tier's FLOP/s
come from), `charges` (what one round asks of each client, and the per-client seconds) and
`round_time` (every rule that turns per-client seconds into a round's time).
"""
