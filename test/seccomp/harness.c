/*
 * harness.c - test-only reference compiler for Moat's seccomp differential test.
 *
 * Purpose: turn a seccomp profile into BPF the way runc 1.1 does it (libcontainer/seccomp:
 * InitSeccomp + matchCall) on top of libseccomp, so that test/seccomp/differential.test.ts can
 * compare the decisions of that program with those of Moat's own compiler (src/seccomp/). It is
 * never part of Moat itself.
 *
 * Build: cc -Wall -Wextra -Werror -O2 -o harness harness.c -lseccomp
 *
 * Protocol (stdin is read to the end, one directive per line, fields separated by spaces,
 * '#' starts a comment line):
 *
 *   harness bpf       reads a profile and writes the exported filter (struct sock_filter[],
 *                     host byte order) to stdout:
 *                       default <ACTION> <errno|->          once, first
 *                       arch <name>                         libseccomp arch name: x86, x32, ...
 *                       optimize <level>                    SCMP_FLTATR_CTL_OPTIMIZE (1 or 2)
 *                       rule <ACTION> <errno|-> <syscall> [<index>,<OP>,<value>,<valueTwo>]...
 *                     ACTION is an OCI name (SCMP_ACT_ERRNO, ...), OP an OCI operator name
 *                     (SCMP_CMP_EQ, ...), values are decimal unsigned 64-bit numbers.
 *                     As runc: a rule whose action equals the default is skipped, a syscall
 *                     name libseccomp cannot resolve is skipped (noted on stderr), and a rule
 *                     that tests one argument index twice is added as one rule per condition.
 *   harness names     reads syscall names; prints "<name> <x86_64> <x86> <x32>" with the
 *                     numbers libseccomp resolves for each ABI ("none" when it cannot resolve
 *                     the name at all; negative numbers are libseccomp pseudo syscalls).
 *   harness numbers   reads "<arch> <number>" lines; prints "<arch> <number> <name|none>".
 *   harness load <flags> <nr>[,<arg>...]...
 *                     reads a filter (struct sock_filter[]) from stdin, loads it in a child
 *                     process with seccomp(SECCOMP_SET_MODE_FILTER, <flags>), makes the given
 *                     system calls there (decimal numbers and arguments) and prints one line
 *                     per call, "<nr> <return value> <errno>", then "exit <status>" or
 *                     "signal <number>"; "load-error <errno>" if the kernel refuses the filter.
 *                     The child reports through shared memory, so the filter may deny write(2).
 *
 * Exit status: 0 on success, 2 on a malformed input line, 3 when libseccomp refuses an
 * operation (runc would then fail to start the container); the reason is on stderr.
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_LINE 65536
#define MAX_ARGS 16

static void die(int status, const char *what, const char *detail)
{
	fprintf(stderr, "harness: %s: %s\n", what, detail);
	exit(status);
}

/* runc getAction(): OCI action name + optional errnoRet -> libseccomp action. */
static uint32_t action_of(const char *name, const char *errno_field)
{
	int has_errno = strcmp(errno_field, "-") != 0;
	/* runc casts errnoRet to int16; libseccomp keeps the low 16 bits. */
	uint16_t data = has_errno ? (uint16_t)strtoul(errno_field, NULL, 10) : EPERM;

	if (!strcmp(name, "SCMP_ACT_KILL") || !strcmp(name, "SCMP_ACT_KILL_THREAD"))
		return SCMP_ACT_KILL_THREAD;
	if (!strcmp(name, "SCMP_ACT_KILL_PROCESS"))
		return SCMP_ACT_KILL_PROCESS;
	if (!strcmp(name, "SCMP_ACT_ERRNO"))
		return SCMP_ACT_ERRNO(data);
	if (!strcmp(name, "SCMP_ACT_TRACE"))
		return SCMP_ACT_TRACE(data);
	if (!strcmp(name, "SCMP_ACT_TRAP"))
		return SCMP_ACT_TRAP;
	if (!strcmp(name, "SCMP_ACT_ALLOW"))
		return SCMP_ACT_ALLOW;
	if (!strcmp(name, "SCMP_ACT_LOG"))
		return SCMP_ACT_LOG;
	if (!strcmp(name, "SCMP_ACT_NOTIFY"))
		return SCMP_ACT_NOTIFY;
	die(2, "unknown action", name);
	return 0;
}

static enum scmp_compare op_of(const char *name)
{
	static const struct {
		const char *name;
		enum scmp_compare op;
	} ops[] = {
		{ "SCMP_CMP_NE", SCMP_CMP_NE }, { "SCMP_CMP_LT", SCMP_CMP_LT },
		{ "SCMP_CMP_LE", SCMP_CMP_LE }, { "SCMP_CMP_EQ", SCMP_CMP_EQ },
		{ "SCMP_CMP_GE", SCMP_CMP_GE }, { "SCMP_CMP_GT", SCMP_CMP_GT },
		{ "SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ },
	};
	size_t i;

	for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (!strcmp(ops[i].name, name))
			return ops[i].op;
	die(2, "unknown operator", name);
	return SCMP_CMP_EQ;
}

/* Parses "<index>,<OP>,<value>,<valueTwo>" (runc getCondition / libseccomp MakeCondition). */
static struct scmp_arg_cmp cond_of(char *field)
{
	struct scmp_arg_cmp c;
	char *index = strtok(field, ",");
	char *op = strtok(NULL, ",");
	char *value = strtok(NULL, ",");
	char *value_two = strtok(NULL, ",");

	if (!index || !op || !value || !value_two)
		die(2, "malformed condition", field);
	memset(&c, 0, sizeof(c));
	c.arg = (unsigned int)strtoul(index, NULL, 10);
	if (c.arg > 5)
		die(2, "argument index above 5", index);
	c.op = op_of(op);
	c.datum_a = strtoull(value, NULL, 10);
	c.datum_b = strtoull(value_two, NULL, 10);
	return c;
}

static void add_rule(scmp_filter_ctx ctx, uint32_t def_action, char *rest)
{
	char *fields[3 + MAX_ARGS];
	struct scmp_arg_cmp conds[MAX_ARGS];
	unsigned int counts[6] = { 0 };
	int nfields = 0, nconds, i, rc, split = 0;
	uint32_t action;
	int nr;
	char *tok;

	for (tok = strtok(rest, " \t"); tok; tok = strtok(NULL, " \t")) {
		if (nfields == 3 + MAX_ARGS)
			die(2, "too many conditions", fields[2]);
		fields[nfields++] = tok;
	}
	if (nfields < 3)
		die(2, "malformed rule", rest);
	action = action_of(fields[0], fields[1]);
	nconds = nfields - 3;
	for (i = 0; i < nconds; i++) {
		char copy[256];

		snprintf(copy, sizeof(copy), "%s", fields[3 + i]);
		conds[i] = cond_of(copy);
		if (++counts[conds[i].arg] > 1)
			split = 1;
	}
	if (action == def_action)
		return; /* runc: redundant rule, silently skipped */
	nr = seccomp_syscall_resolve_name(fields[2]);
	if (nr == __NR_SCMP_ERROR) {
		fprintf(stderr, "harness: unknown syscall %s skipped\n", fields[2]);
		return;
	}
	if (nconds == 0) {
		rc = seccomp_rule_add(ctx, action, nr, 0);
	} else if (split) {
		rc = 0;
		for (i = 0; i < nconds && rc == 0; i++)
			rc = seccomp_rule_add_array(ctx, action, nr, 1, &conds[i]);
	} else {
		rc = seccomp_rule_add_array(ctx, action, nr, (unsigned int)nconds, conds);
	}
	if (rc < 0)
		die(3, "seccomp_rule_add failed", strerror(-rc));
}

static int cmd_bpf(void)
{
	static char line[MAX_LINE];
	scmp_filter_ctx ctx = NULL;
	uint32_t def_action = 0;
	int rc;

	while (fgets(line, sizeof(line), stdin)) {
		char *word, *rest;

		line[strcspn(line, "\n")] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		word = strtok(line, " \t");
		rest = strtok(NULL, "");
		if (!strcmp(word, "default")) {
			char *name = strtok(rest, " \t");
			char *err = strtok(NULL, " \t");

			if (ctx || !name || !err)
				die(2, "malformed default line", rest ? rest : "");
			def_action = action_of(name, err);
			if (def_action == SCMP_ACT_NOTIFY)
				die(3, "default action", "SCMP_ACT_NOTIFY cannot be the default action");
			ctx = seccomp_init(def_action);
			if (!ctx)
				die(3, "seccomp_init", "failed");
			rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
			if (rc < 0)
				die(3, "seccomp_attr_set(NNP)", strerror(-rc));
			continue;
		}
		if (!ctx)
			die(2, "the first directive must be", "default");
		if (!rest)
			die(2, "missing operand for", word);
		if (!strcmp(word, "arch")) {
			uint32_t arch = seccomp_arch_resolve_name(rest);

			if (arch == 0)
				die(2, "unknown arch", rest);
			rc = seccomp_arch_add(ctx, arch);
			if (rc < 0 && rc != -EEXIST)
				die(3, "seccomp_arch_add", strerror(-rc));
		} else if (!strcmp(word, "optimize")) {
			rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, (uint32_t)strtoul(rest, NULL, 10));
			if (rc < 0)
				die(3, "seccomp_attr_set(OPTIMIZE)", strerror(-rc));
		} else if (!strcmp(word, "rule")) {
			add_rule(ctx, def_action, rest);
		} else {
			die(2, "unknown directive", word);
		}
	}
	if (!ctx)
		die(2, "empty profile", "no default line");
	fflush(stdout);
	rc = seccomp_export_bpf(ctx, 1);
	if (rc < 0)
		die(3, "seccomp_export_bpf", strerror(-rc));
	seccomp_release(ctx);
	return 0;
}

static void print_nr(int nr)
{
	if (nr == __NR_SCMP_ERROR)
		printf(" none");
	else
		printf(" %d", nr);
}

static int cmd_names(void)
{
	static char line[MAX_LINE];

	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = '\0';
		if (line[0] == '\0')
			continue;
		printf("%s", line);
		print_nr(seccomp_syscall_resolve_name_arch(SCMP_ARCH_X86_64, line));
		print_nr(seccomp_syscall_resolve_name_arch(SCMP_ARCH_X86, line));
		print_nr(seccomp_syscall_resolve_name_arch(SCMP_ARCH_X32, line));
		printf("\n");
	}
	return 0;
}

static int cmd_numbers(void)
{
	static char line[MAX_LINE];

	while (fgets(line, sizeof(line), stdin)) {
		char arch_name[64];
		long nr;
		uint32_t arch;
		char *name;

		if (sscanf(line, "%63s %ld", arch_name, &nr) != 2)
			continue;
		arch = seccomp_arch_resolve_name(arch_name);
		if (arch == 0)
			die(2, "unknown arch", arch_name);
		name = seccomp_syscall_resolve_num_arch(arch, (int)nr);
		printf("%s %ld %s\n", arch_name, nr, name ? name : "none");
		free(name);
	}
	return 0;
}

#define MAX_CALLS 64
#define MAX_INSNS 4096

struct call_result {
	long ret;
	int err;
	int done;
};

static int cmd_load(int argc, char **argv)
{
	static struct sock_filter insns[MAX_INSNS + 1];
	struct sock_fprog prog;
	struct call_result *results;
	unsigned long flags = strtoul(argv[0], NULL, 10);
	long calls[MAX_CALLS][7];
	int ncalls = argc - 1, i, status;
	size_t n;
	pid_t pid;

	if (ncalls > MAX_CALLS)
		die(2, "too many calls", argv[MAX_CALLS + 1]);
	for (i = 0; i < ncalls; i++) {
		char *tok = strtok(argv[1 + i], ",");
		int j;

		memset(calls[i], 0, sizeof(calls[i]));
		for (j = 0; tok && j < 7; j++, tok = strtok(NULL, ","))
			calls[i][j] = (long)strtoull(tok, NULL, 10);
	}
	n = fread(insns, sizeof(insns[0]), MAX_INSNS + 1, stdin);
	if (n == 0 || n > MAX_INSNS)
		die(2, "bad filter length", "expected 1 to 4096 instructions");
	prog.len = (unsigned short)n;
	prog.filter = insns;
	results = mmap(NULL, sizeof(*results) * (MAX_CALLS + 1), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (results == MAP_FAILED)
		die(3, "mmap", strerror(errno));
	memset(results, 0, sizeof(*results) * (MAX_CALLS + 1));
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die(3, "fork", strerror(errno));
	if (pid == 0) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
		    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog) < 0) {
			results[MAX_CALLS].err = errno;
			results[MAX_CALLS].done = 1;
			_exit(100);
		}
		for (i = 0; i < ncalls; i++) {
			errno = 0;
			results[i].ret = syscall(calls[i][0], calls[i][1], calls[i][2], calls[i][3],
						 calls[i][4], calls[i][5], calls[i][6]);
			results[i].err = errno;
			results[i].done = 1;
		}
		syscall(SYS_exit_group, 0);
		__builtin_trap(); /* exit_group itself was denied */
	}
	if (waitpid(pid, &status, 0) < 0)
		die(3, "waitpid", strerror(errno));
	if (results[MAX_CALLS].done) {
		printf("load-error %d\n", results[MAX_CALLS].err);
		return 0;
	}
	for (i = 0; i < ncalls && results[i].done; i++)
		printf("%ld %ld %d\n", calls[i][0], results[i].ret, results[i].err);
	if (WIFSIGNALED(status))
		printf("signal %d\n", WTERMSIG(status));
	else
		printf("exit %d\n", WEXITSTATUS(status));
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "bpf"))
		return cmd_bpf();
	if (argc == 2 && !strcmp(argv[1], "names"))
		return cmd_names();
	if (argc == 2 && !strcmp(argv[1], "numbers"))
		return cmd_numbers();
	if (argc >= 3 && !strcmp(argv[1], "load"))
		return cmd_load(argc - 2, argv + 2);
	fprintf(stderr, "usage: harness bpf|names|numbers < input, or harness load <flags> <call>... < filter\n");
	return 2;
}
