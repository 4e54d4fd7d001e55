/*
 * seccomp-run: run a command under a real seccomp filter that makes
 * io_uring_setup() fail with EPERM, as Docker's default profile does.
 * Usage: seccomp-run COMMAND [ARGS...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#endif

int
main(int argc, char **argv)
{
#ifdef ARCH
	struct sock_filter filter[] = {
		/* A foreign architecture's numbers mean nothing here. */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {
		.len = sizeof(filter) / sizeof(filter[0]),
		.filter = filter,
	};

	if (argc < 2) {
		fprintf(stderr, "usage: seccomp-run COMMAND [ARGS...]\n");
		return 2;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
		perror("seccomp-run: installing the filter");
		return 1;
	}
	/* Prove the filter bites before handing over. */
	if (syscall(__NR_io_uring_setup, 1, NULL) != -1 || errno != EPERM) {
		fprintf(stderr, "seccomp-run: io_uring_setup not refused\n");
		return 1;
	}
	execvp(argv[1], argv + 1);
	perror("seccomp-run: exec");
	return 127;
#else
	(void)argc;
	(void)argv;
	fprintf(stderr, "seccomp-run: unknown architecture\n");
	return 77;
#endif
}
