package tinyboot

// finit_module(2): the syscall package names it on some arches only.
const sysFinitModule = 313
