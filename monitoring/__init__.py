"""Production monitoring: what the served model sees and answers, compared with what it was trained on.

- :mod:`monitoring.summaries`: cheap per-image summaries (from the network's input and the
  original image's size and mode), computed by the API on every request;
- :mod:`monitoring.stats`: fixed-size histograms of those summaries and of the predictions, which
  merge by addition (threads, replicas);
- :mod:`monitoring.reference`: the reference statistics written with each registry version at
  training time, and the per-image out-of-distribution score;
- :mod:`monitoring.live`: the API's live statistics (thread-safe, bounded memory, reset on reload);
- :mod:`monitoring.drift`: population stability indices and the verdict of ``make monitor``;
- :mod:`monitoring.alarm`, :mod:`monitoring.report`, :mod:`monitoring.run`: ``make monitor``.

Layer: this package imports the configuration, registry and storage layers only.
"""
