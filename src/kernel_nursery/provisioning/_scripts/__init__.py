"""Scripts that run in another process, one file each, never imported by the library.

Each is a stand-alone program on Python's standard library alone, read from its file and run
by another interpreter: ``guardian.py`` by a local ``python -I -S`` beside the managing process
(it ends kernels whose manager died), ``ssh_remote.py`` by the remote host's Python through
``ssh`` (it starts the kernel there and watches the connection), ``slurm_node.py`` by
``python -I -c`` inside a Slurm job step (it starts the kernel on the node and watches the
launcher). ``tests/test_layers.py`` checks that nothing in the library imports them and that they
import nothing but the standard library. Coverage cannot follow them; their tests run them for
real.
"""
