"""Defaults shared by every experiment config (each config file overrides what it needs).

Every key is documented here once, and this is its one default:
`clipjax.config_types.ExperimentSpec.from_config` validates the keys, has no fallbacks of its
own, and is the only reader of a ConfigDict. A default the library also needs (CLIP's growth
and smallest keep fraction, SecAgg's security targets) is the library's named constant.
"""

import ml_collections

from clipjax.clip import invariance, keep
from clipjax.secagg import params as secagg_params


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.rounds = 30
  c.num_clients = 20            # population K: clients chosen once by seed (0: all writers /
                                # roles; CIFAR-10: partitions, 0 = 100)
  c.cohort_size = 0             # C: clients sampled per round from the population, a pure
                                # function of (seed, round); 0: all K every round (the paper)
  c.unavailable_rate = 0.0      # churn: each cohort client is away this round with this
                                # probability (a pure function of seed, round, client); away
                                # clients take no part and miss the round's model
  c.local_epochs = 1
  c.batch_size = 10
  c.client_lr = 0.1             # client SGD learning rate
  c.client_momentum = 0.0
  c.server_optimizer = "sgd"    # sgd (FedAvg with server_lr=1) | adam | yogi
  c.server_lr = 1.0
  c.eval_every = 5              # evaluate every k rounds and at the last round
  c.eval_batch_size = 256
  c.method = "fedavg"           # fedavg | random | ordered | fluid | clip_compute | clip_network
  c.checkpoint_every = 5        # whole run state every k rounds and at the last (0: only the
                                # last); the same command in the same workdir resumes from it
  c.local_loop = "auto"         # loop over local steps: host (jitted step per chunk, driven by
                                # Python; CPU default) | scan (one jitted lax.scan; GPU/TPU
                                # default) | auto. See clipjax/fl/training.py.
  c.client_batch = -1           # clients per vmapped chunk; -1: the measured default for the
                                # model and backend (1 on CPU, all on GPU/TPU); 0: all at once.
                                # Measure with scripts/bench_train.py.

  c.scale = ml_collections.ConfigDict()  # layout only: results equal up to summation order
  c.scale.chunk_clients = -1    # clients trained and securely summed at once; memory is set by
                                # the chunk, not the cohort. -1: auto, the largest chunk whose
                                # estimated memory fits memory_budget_gb; 0: the whole cohort
  c.scale.memory_budget_gb = 0.0  # the auto chunk's budget; 0: 25% of host RAM on CPU, 50% of
                                  # the first device's memory on GPU/TPU
  c.scale.shard_devices = 1     # devices a chunk's client axis is sharded over (0: all JAX sees)

  c.data = ml_collections.ConfigDict()
  c.data.name = "femnist"       # femnist | shakespeare | cifar10
  c.data.data_dir = ""          # raw data folder; "" searches $CLIPJAX_DATA, ./data, ../shared/data
  c.data.partition = "iid"      # cifar10 only: iid | dirichlet
  c.data.alpha = 0.5            # cifar10 Dirichlet concentration
  c.data.num_partitions = 0     # cifar10: partition over this many clients, train num_clients
                                # of them chosen by seed (0: num_clients partitions)
  c.data.test_clients = "chosen"  # evaluate on the test data of: chosen (the run's clients) |
                                  # all (every client of the dataset; CIFAR-10: the test set)
  c.data.max_examples = 0       # femnist/shakespeare: cap each client's train examples (a seeded
                                # subset; Shakespeare: a contiguous block of windows); 0: keep all

  c.model = ml_collections.ConfigDict()
  c.model.name = "leaf_cnn"     # leaf_cnn | vgg9 | leaf_lstm
  c.model.width = 1.0           # width multiplier of every prunable layer

  c.secagg = ml_collections.ConfigDict()
  c.secagg.enabled = False
  c.secagg.protocol = "secagg+"  # secagg (complete graph) | secagg+ (random k-regular graph)
  c.secagg.degree = 0            # SecAgg+ graph degree k; 0: chosen by the analysis below
  c.secagg.threshold = 0         # Shamir threshold t; 0: chosen by the analysis below
  c.secagg.bits = 0              # quantisation bits; 0: the largest safe for n clients
  c.secagg.clip = 0.0            # clip range for quantisation; 0: the protocol default
  c.secagg.dropout_rate = 0.0    # random client drop-out rate injected at every stage
  c.secagg.max_weight = 0.0      # public bound on a client's weight (its training examples);
                                 # 0: the largest count in the run's population; an explicit
                                 # value makes a larger weight an error
  c.secagg.simulate = "protocol"  # protocol | sum: the protocol's exact result without keys or
                                  # masks (the clock charges the same; docs/secagg.md)
  c.secagg.verify_every = 0      # every N-th round run both, stop on any bit difference; 0: never
  c.secagg.graph_randomness = "committed"  # SecAgg+ graph labels: committed (SHA-256 of the
                                          # nonces the clients commit in AdvertiseKeys) | seed
                                          # (the seed alone, as runs stored before it)
  # (k, t) come from Bell et al.'s analysis for this threat (clipjax/secagg/params.py):
  c.secagg.corruption_fraction = 0.2  # clients that may collude with the server
  c.secagg.dropout_fraction = 0.1     # drop-outs to tolerate (the analysis uses the larger of
                                      # this and dropout_rate)
  c.secagg.security_bits = secagg_params.DEFAULT_SECURITY_BITS  # 40: P[an input or partial
                                                                # sum leaks] <= 2^-40
  c.secagg.correctness_bits = secagg_params.DEFAULT_CORRECTNESS_BITS  # 20: P[round lost to
                                                                      # drop-outs] <= 2^-20
  c.secagg.allow_weak_parameters = False  # run an explicit degree/threshold that misses the
                                          # security target (e.g. the old 2 log2 n heuristic)

  c.clip = ml_collections.ConfigDict()
  c.clip.straggler_fraction = 0.2   # f: a client is a straggler iff its time > quantile(T, 1 - f)
  c.clip.min_keep = keep.DEFAULT_P_MIN  # 0.5: smallest neuron keep fraction p (rho_min = FLOPs
                                        # at p)
  c.clip.rho_min = 0.0              # 0: FLOP fraction of the model at min_keep
  c.clip.growth = invariance.DEFAULT_GROWTH  # 1.2: invariance threshold x growth below m_l
                                            # invariant units, / growth above 2 m_l (DESIGN 2.4)
  c.clip.threshold_init = "band"    # first threshold: band (DESIGN 2.4, score of the
                                    # ceil(1.5 m)-th unit) | min (smallest positive score, as
                                    # FLuID; the default before issue 24) | median | mean
  c.clip.slack = "lowest_score"     # lowest_score | random order of non-invariant units
  c.clip.score = "relative_l2"      # invariance score: relative_l2 (DESIGN 2.4, ||dw||/||w||
                                    # of the unit's group) | max_relative (max over the group of
                                    # |dw|/|w|; the default before issue 24)
  c.clip.reference = "last_seen"    # w(t-1) of CLIP's scores: last_seen (the last different
                                    # global model the client received, DESIGN 2.9) | server
                                    # (the server also sends w(t-1): a second download)
  c.clip.straggler_info = "auto"    # how a client learns its peers' times: auto (histogram
                                    # under SecAgg with the quantile rule, else neighbours;
                                    # issue 27) | neighbours (sealed reports from its graph
                                    # neighbours, DESIGN 2.2) | histogram (bins of every
                                    # client's times, summed under SecAgg;
                                    # clipjax/clip/histogram.py)
  c.clip.broadcast = "auto"         # how the reports travel (neighbours): share_keys (inside
                                    # SecAgg's ShareKeys ciphertexts: report bytes, no message;
                                    # DESIGN 2.2, issue 24) | own_message (a sealed message
                                    # relayed by the server) | auto (share_keys under SecAgg)
  c.clip.histogram_bins = 256       # histogram: log-spaced bins of the times (5.5% wide over
                                    # the range below; 2 x 256 words = 2 KB more per upload)
  c.clip.histogram_lo_s = 0.01      # histogram: first bin edge, seconds (below: first bin)
  c.clip.histogram_hi_s = 10000.0   # histogram: last bin edge, seconds (above: last bin)
  c.clip.threshold_scale = 1.0      # a unit is invariant when its score <= threshold x this
                                    # (issue 25's sensitivity study; the band controller tracks
                                    # the unscaled threshold)
  c.clip.fixed_keep = 0.0           # > 0: every straggler keeps exactly this neuron fraction p
                                    # instead of its keep rule's (issue 25's criterion study:
                                    # criteria compared at one p); 0: the keep rule's p
  c.clip.upload = "padded"          # the SecAgg upload: padded (paper: every client sends the
                                    # full b-bit vector) | planes (issue 26: two SecAgg
                                    # instances; network stragglers send only the high bit
                                    # plane; needs straggler_info=histogram)
  c.clip.high_bits = 12             # planes: bits of the high plane (the low plane: the rest)
  c.clip.aggregation = "auto"       # auto (the method's own: padded, fluid participation-
                                    # weighted) | padded (paper) | participation_weighted

  # Time reports (DESIGN 2.2) and clients that lie in them (beyond the paper; see
  # clipjax/clip/reports.py): a seeded fraction of the population multiplies the times it
  # broadcasts by a factor; honest clients cannot tell who.
  c.reports = ml_collections.ConfigDict()
  c.reports.liar_fraction = 0.0     # fraction of the population that lies
  c.reports.liar_factor = 1.0       # their reported times = true times x factor
  c.reports.rule = "quantile"       # straggler decision: quantile (DESIGN 2.2) | plausible
                                    # (the same quantile over reports that public bounds allow)
  c.reports.bound_sigmas = 4.0      # plausible: jitter allowance, log-normal sigmas each way

  # Devices (clipjax/clock/devices.py documents every default and its source): fast CPUs at
  # 10 GFLOP/s, slow ones at 2/3 of that (the paper's 3 GHz vs 2 GHz); 5G vs 4G links.
  c.devices = ml_collections.ConfigDict()
  c.devices.compute_slow = 0        # clients with a slow CPU only
  c.devices.network_slow = 0        # clients on 4G only
  c.devices.both_slow = 0           # slow CPU and 4G; all three 0: clip.straggler_fraction compute-slow
  c.devices.jitter_sigma = 0.05     # per-round log-normal jitter of compute and network times
  c.devices.fast_flops = 0.0        # 0: the calibration's fast tier
  c.devices.calibration = "default" # default: the documented 10 GFLOP/s estimate | measured:
                                    # this machine, from scripts/measure_device.py --save
  c.devices.slow_compute_ratio = 2.0 / 3.0
  c.devices.server_seconds = 0.0    # fixed server seconds added to every round
  c.devices.server_speedup = 10.0   # the server's work (summing, SecAgg unmasking, FLuID's
                                    # scoring) runs at this x the fast tier's rate; 0 charges
                                    # none (before issue 24); clipjax/clock/server.py
  return c
