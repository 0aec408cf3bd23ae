package tinyboot

// finit_module(2) in the generic syscall table (arm64, riscv64).
const sysFinitModule = 273
