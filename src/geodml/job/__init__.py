"""One module per cross-cutting concern of a job, each holding its coordinator half
and its site half side by side (each with a test that the two undo each other):
:mod:`~geodml.job.spec` (the job <-> ``PrepareRequest``), :mod:`~geodml.job.support`
(restrict / expand), :mod:`~geodml.job.compression` (both channels, the per-row mean,
the precision policy), :mod:`~geodml.job.secure` (secure aggregation) and
:mod:`~geodml.job.privacy` (differential privacy); and
:mod:`~geodml.job.procedure_params`, every site procedure's parameters, which the site
reads and the coordinator checks what it sends with."""
