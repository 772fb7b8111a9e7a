"""List the installed kernels and look one up, as `kernel-nursery specs` does."""

from __future__ import annotations

from kernel_nursery import KernelSpecManager, NoSuchKernelSpecError

ksm = KernelSpecManager()
for name, resource_dir in sorted(ksm.find_kernel_specs().items()):
    print(f"{name:12} {resource_dir}")

spec = ksm.get_kernel_spec("python3")
print("python3 runs:", spec.argv[1:], "in", spec.language)

try:
    ksm.get_kernel_spec("no-such-kernel")
except NoSuchKernelSpecError as exc:
    print("error:", exc)
