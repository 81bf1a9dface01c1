"""Planning: centralize or train geo-distributed, and what each costs.

* :mod:`~geodml.planning.regions`: the region table and the default link between two
  regions;
* :mod:`~geodml.planning.deployment`: deployment files (sites, home, links, TLS);
* :mod:`~geodml.planning.wan`: modeled WAN time and egress dollars of metered rounds;
* :mod:`~geodml.planning.connect`: a coordinator's federation over a deployment's sites;
* :mod:`~geodml.planning.plans`, :mod:`~geodml.planning.estimates`,
  :mod:`~geodml.planning.calibration`, :mod:`~geodml.planning.extrapolate`,
  :mod:`~geodml.planning.central_time`, :mod:`~geodml.planning.memory_probe`,
  :mod:`~geodml.planning.private` and :mod:`~geodml.planning.planner`: `geodml plan`'s
  predictions and recommendation;
* :mod:`~geodml.planning.compare`: `geodml compare`: every plan run for real, a report.
"""
