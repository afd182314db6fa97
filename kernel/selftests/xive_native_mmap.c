// SPDX-License-Identifier: GPL-2.0
/*
 * xive_native_mmap - the mmap() contract of the KVM XIVE native device
 *
 * No guest: a VM, a KVM_DEV_TYPE_XIVE device, a few sources configured
 * with KVM_DEV_XIVE_GRP_SOURCE, and mmap()s of the device file. Every ESB
 * load is an 8-byte load from a configured source's EOI/management page:
 * ESB_GET (0x800) reads PQ, SET_PQ_xx (0xc00..0xf00) sets it and returns
 * the old PQ, so each check can tell which source a page reaches.
 *
 * What the kernel series in kernel/ makes true, one TAP test each:
 *  - an ESB mapping may start at any interrupt's page offset
 *    (KVM_XIVE_ESB_PAGE_OFFSET + 2 * n), and its faults reach source n;
 *  - mappings that run past the ESB window are refused;
 *  - a mapping split by a MAP_FIXED memfd overlay keeps reaching, in each
 *    part, the sources its file offsets name (ESB_GET and SET_PQ);
 *  - TIMA page offsets 1 to 3 are refused;
 *  - private (MAP_PRIVATE) mappings of either window are refused.
 *
 * --expect=stock turns the checks of what the series adds into expected
 * failures (TAP "# TODO"): they are reported, counted apart, and do not
 * fail the run; an unexpected pass does. Default: --expect=patched.
 *
 * --crash-case runs only the load through a private ESB mapping, in a
 * child process. A kernel without the fix BUG()s in vmf_insert_pfn_prot()
 * on that load ("kernel BUG at mm/memory.c"), so run it last, or alone:
 * the child dies in the kernel, the parent waits for it a while, looks
 * for the BUG in the kernel log and reports what it found.
 *
 * Output is TAP 13; the last line is "<label>: N passed, N failed, ..."
 * (--label, default xive_native_mmap). Exit status 0 unless a check
 * failed unexpectedly; 4 (KSFT_SKIP) without /dev/kvm or XIVE support.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/kvm.h>

#ifndef KVM_XIVE_ESB_PAGE_OFFSET
#error "needs the powerpc uapi headers (asm/kvm.h with the XIVE device definitions)"
#endif

#define XIVE_ESB_GET		0x800
#define XIVE_ESB_SET_PQ_00	0xc00
#define XIVE_ESB_SET_PQ_01	0xd00
#define XIVE_ESB_SET_PQ_10	0xe00
#define XIVE_ESB_SET_PQ_11	0xf00
/* KVMPPC_XIVE_NR_IRQS in arch/powerpc/kvm/book3s_xive.h: 1024 ICS of 1024 sources */
#define XIVE_NR_IRQS		(1024UL * 1024UL)
#define NR_SOURCES		8

#define KSFT_PASS 0
#define KSFT_FAIL 1
#define KSFT_SKIP 4

static const char *label = "xive_native_mmap";
static int expect_stock;
static unsigned int test_nr, n_pass, n_fail, n_xfail, n_xpass, n_skip;
static long page;

static void diag(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("# ", stdout);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

/*
 * One TAP line. @added: the check is of something the kernel series adds,
 * so with --expect=stock a failure is expected (TODO) and a pass is not.
 */
static void result(int ok, int added, const char *name, const char *fmt, ...)
{
	char why[256] = "";
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(why, sizeof(why), fmt, ap);
		va_end(ap);
	}
	test_nr++;
	if (added && expect_stock) {
		if (ok) {
			n_xpass++;
			printf("not ok %u %s # passed unexpectedly on a stock kernel%s%s\n",
			       test_nr, name, *why ? ": " : "", why);
		} else {
			n_xfail++;
			printf("not ok %u %s # TODO stock kernel lacks this%s%s\n",
			       test_nr, name, *why ? ": " : "", why);
		}
	} else if (ok) {
		n_pass++;
		printf("ok %u %s%s%s\n", test_nr, name, *why ? " # " : "", why);
	} else {
		n_fail++;
		printf("not ok %u %s%s%s\n", test_nr, name, *why ? " # " : "", why);
	}
	fflush(stdout);
}

static void skip(const char *name, const char *why)
{
	test_nr++;
	n_skip++;
	printf("ok %u %s # SKIP %s\n", test_nr, name, why);
	fflush(stdout);
}

static int finish(void)
{
	printf("1..%u\n", test_nr);
	printf("# Totals: pass:%u fail:%u xfail:%u xpass:%u skip:%u error:0\n",
	       n_pass, n_fail, n_xfail, n_xpass, n_skip);
	printf("%s: %u passed, %u failed, %u expected failures (%s kernel), %u skipped\n",
	       label, n_pass, n_fail + n_xpass, n_xfail,
	       expect_stock ? "stock" : "patched", n_skip);
	fflush(stdout);
	return n_fail || n_xpass ? KSFT_FAIL : KSFT_PASS;
}

/* --- the device ------------------------------------------------------------------------------ */

struct xive {
	int kvm, vm, dev;
};

static int xive_open(struct xive *x, char *err, size_t errlen)
{
	struct kvm_create_device cd = { .type = KVM_DEV_TYPE_XIVE };

	x->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (x->kvm < 0) {
		snprintf(err, errlen, "open /dev/kvm: %s", strerror(errno));
		return -1;
	}
	x->vm = ioctl(x->kvm, KVM_CREATE_VM, 0);
	if (x->vm < 0) {
		snprintf(err, errlen, "KVM_CREATE_VM: %s", strerror(errno));
		return -1;
	}
	if (ioctl(x->vm, KVM_CHECK_EXTENSION, KVM_CAP_PPC_IRQ_XIVE) <= 0) {
		snprintf(err, errlen, "no KVM_CAP_PPC_IRQ_XIVE");
		return -1;
	}
	if (ioctl(x->vm, KVM_CREATE_DEVICE, &cd) < 0) {
		snprintf(err, errlen, "KVM_CREATE_DEVICE(KVM_DEV_TYPE_XIVE): %s", strerror(errno));
		return -1;
	}
	x->dev = cd.fd;
	return 0;
}

static int source_configure(struct xive *x, uint64_t irq)
{
	uint64_t val = 0;	/* MSI, not asserted */
	struct kvm_device_attr attr = {
		.group = KVM_DEV_XIVE_GRP_SOURCE,
		.attr = irq,
		.addr = (uint64_t)(uintptr_t)&val,
	};

	return ioctl(x->dev, KVM_SET_DEVICE_ATTR, &attr);
}

/* mmap() of @npages device pages from page offset @pgoff; MAP_FAILED with errno set on refusal */
static void *dev_map(struct xive *x, unsigned long pgoff, unsigned long npages, int flags)
{
	return mmap(NULL, npages * page, PROT_READ | PROT_WRITE, flags, x->dev,
		    (off_t)(pgoff * page));
}

static unsigned long esb_pgoff(unsigned long irq)
{
	return KVM_XIVE_ESB_PAGE_OFFSET + 2 * irq;
}

/* One check: an mmap() of @npages from @pgoff with @flags, expected to be accepted; unmapped again */
static void expect_mapped(struct xive *x, unsigned long pgoff, unsigned long npages, int flags,
			  int added, const char *name)
{
	void *m = mmap(NULL, npages * page, PROT_READ, flags, x->dev, (off_t)(pgoff * page));

	result(m != MAP_FAILED, added, name, m == MAP_FAILED ? "%s" : NULL, strerror(errno));
	if (m != MAP_FAILED)
		munmap(m, npages * page);
}

/*
 * One check: the same mmap(), expected to fail with EINVAL. Never touched if
 * accepted (a private mapping must not be), just unmapped again.
 */
static void expect_refused(struct xive *x, unsigned long pgoff, unsigned long npages, int flags,
			   int added, const char *name)
{
	void *m = mmap(NULL, npages * page, PROT_READ, flags, x->dev, (off_t)(pgoff * page));
	int ok = m == MAP_FAILED && errno == EINVAL;

	result(ok, added, name, ok ? "EINVAL" : m == MAP_FAILED ? "%s" : "accepted", strerror(errno));
	if (m != MAP_FAILED)
		munmap(m, npages * page);
}

/*
 * One 8-byte load at @off of the management page of the interrupt mapped at
 * @irq_base; returns PQ, the low bits of the big-endian doubleword (in_be64()
 * in the kernel).
 */
static unsigned int esb_load(void *irq_base, unsigned int off)
{
	volatile uint64_t *p = (volatile uint64_t *)((char *)irq_base + page + off);

	return (unsigned int)(be64toh(*p) & 3);
}

/* --- the checks -------------------------------------------------------------------------------- */

/* Sets source s to PQ state pq[s] through @win (the whole window, mapped at offset 4) */
static void set_states(char *win, const unsigned int *pq, unsigned int n)
{
	static const unsigned int set_off[4] = {
		XIVE_ESB_SET_PQ_00, XIVE_ESB_SET_PQ_01, XIVE_ESB_SET_PQ_10, XIVE_ESB_SET_PQ_11,
	};
	unsigned int s;

	for (s = 0; s < n; s++)
		esb_load(win + 2 * s * page, set_off[pq[s]]);
}

static void test_whole_window(struct xive *x, char **win_out)
{
	unsigned int s, pq, bad = 0;
	char *win;

	win = dev_map(x, KVM_XIVE_ESB_PAGE_OFFSET, 2 * NR_SOURCES, MAP_SHARED);
	if (win == MAP_FAILED) {
		result(0, 0, "shared mapping of the ESB window at page offset 4", "%s", strerror(errno));
		*win_out = NULL;
		return;
	}
	/* KVM_DEV_XIVE_GRP_SOURCE masks a new source with a SET_PQ_01 load */
	for (s = 0; s < NR_SOURCES; s++) {
		pq = esb_load(win + 2 * s * page, XIVE_ESB_GET);
		if (pq != 1)
			bad++;
	}
	result(!bad, 0, "shared mapping of the ESB window at page offset 4",
	       "%u of %u sources read PQ=01 through it", NR_SOURCES - bad, NR_SOURCES);
	*win_out = win;
}

static void test_per_irq_offsets(struct xive *x, char *win)
{
	static const unsigned int irqs[] = { 1, 3, 7 };
	static const unsigned int pq[NR_SOURCES] = { 0, 2, 1, 3, 2, 0, 1, 3 };
	unsigned int i, accepted = 0, right = 0, got[3] = { 9, 9, 9 };
	int err = 0;
	void *m[3];

	for (i = 0; i < 3; i++) {
		m[i] = dev_map(x, esb_pgoff(irqs[i]), 2, MAP_SHARED);
		if (m[i] == MAP_FAILED)
			err = errno;
		else
			accepted++;
	}
	result(accepted == 3, 1, "ESB mappings of single interrupts at their own page offsets (1, 3, 7)",
	       accepted == 3 ? NULL : "%u of 3 accepted, then %s", accepted, strerror(err));
	if (accepted != 3 || !win) {
		result(0, 1, "faults of a per-interrupt mapping reach the source its offset names",
		       "needs the mappings above");
	} else {
		set_states(win, pq, NR_SOURCES);
		for (i = 0; i < 3; i++) {
			got[i] = esb_load(m[i], XIVE_ESB_GET);
			right += got[i] == pq[irqs[i]];
		}
		result(right == 3, 1, "faults of a per-interrupt mapping reach the source its offset names",
		       "PQ %u%u%u read, %u%u%u expected", got[0], got[1], got[2],
		       pq[irqs[0]], pq[irqs[1]], pq[irqs[2]]);
	}
	for (i = 0; i < 3; i++)
		if (m[i] != MAP_FAILED)
			munmap(m[i], 2 * page);
}

static void test_past_window(struct xive *x)
{
	unsigned long last = esb_pgoff(XIVE_NR_IRQS - 1);

	/* The last interrupt's two pages end the window: accepted by the series */
	expect_mapped(x, last, 2, MAP_SHARED, 1, "ESB mapping of the last interrupt's two pages");
	expect_refused(x, last, 3, MAP_SHARED, 0, "ESB mapping running one page past the window is refused");
	expect_refused(x, esb_pgoff(XIVE_NR_IRQS), 2, MAP_SHARED, 0,
		       "ESB mapping starting past the window is refused");
	/* From page offset 4, refused by every kernel */
	expect_refused(x, KVM_XIVE_ESB_PAGE_OFFSET, 2 * XIVE_NR_IRQS + 1, MAP_SHARED | MAP_NORESERVE, 0,
		       "mapping of the whole ESB window plus one page is refused");
}

/*
 * Interrupts 0-3 mapped at offset 4, a memfd over interrupt 1's two pages:
 * the part after the overlay starts at interrupt 2's file offset, and its
 * faults must reach sources 2 and 3, not 0 and 1.
 */
static void test_split_mapping(struct xive *x, char *win)
{
	static const unsigned int pq[4] = { 3, 0, 2, 1 };
	unsigned int g2, g3, old, s3, s2;
	char *m, *ov;
	int mfd;

	if (!win) {
		result(0, 1, "split mapping: ESB_GET through each part reads the source its offset names",
		       "needs the whole-window mapping");
		result(0, 1, "split mapping: a SET_PQ load changes the source its offset names",
		       "needs the whole-window mapping");
		return;
	}
	m = dev_map(x, KVM_XIVE_ESB_PAGE_OFFSET, 8, MAP_SHARED);
	mfd = memfd_create("xive-overlay", MFD_CLOEXEC);
	if (m == MAP_FAILED || mfd < 0 || ftruncate(mfd, 2 * page)) {
		result(0, 0, "split mapping: set up", "%s", strerror(errno));
		return;
	}
	/* Overlay first, loads after: every fault below happens on the split mapping */
	ov = mmap(m + 2 * page, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, mfd, 0);
	if (ov == MAP_FAILED) {
		result(0, 0, "split mapping: memfd overlay over interrupt 1", "%s", strerror(errno));
		return;
	}
	set_states(win, pq, 4);
	g2 = esb_load(m + 4 * page, XIVE_ESB_GET);
	g3 = esb_load(m + 6 * page, XIVE_ESB_GET);
	result(g2 == pq[2] && g3 == pq[3], 1,
	       "split mapping: ESB_GET through each part reads the source its offset names",
	       "interrupts 2, 3 read PQ %u, %u; sources 2, 3 hold %u, %u (0, 1 hold %u, %u)",
	       g2, g3, pq[2], pq[3], pq[0], pq[1]);

	/* SET_PQ_00 aimed at interrupt 3: must change source 3 and leave source 2 alone */
	old = esb_load(m + 6 * page, XIVE_ESB_SET_PQ_00);
	s3 = esb_load(win + 6 * page, XIVE_ESB_GET);
	s2 = esb_load(win + 4 * page, XIVE_ESB_GET);
	result(old == pq[3] && s3 == 0 && s2 == pq[2], 1,
	       "split mapping: a SET_PQ load changes the source its offset names",
	       "SET_PQ_00 at interrupt 3 returned %u; sources 2, 3 now %u, %u (expected %u, 0)",
	       old, s2, s3, pq[2]);
	munmap(m, 8 * page);
	close(mfd);
}

static void test_tima(struct xive *x)
{
	unsigned long off;
	char name[96];

	expect_mapped(x, KVM_XIVE_TIMA_PAGE_OFFSET, 4, MAP_SHARED, 0,
		      "shared mapping of the TIMA (page offset 0, 4 pages)");
	for (off = 1; off <= 3; off++) {
		snprintf(name, sizeof(name), "TIMA mapping at page offset %lu is refused", off);
		expect_refused(x, off, 1, MAP_SHARED, 0, name);
	}
	expect_refused(x, KVM_XIVE_TIMA_PAGE_OFFSET, 5, MAP_SHARED, 0, "TIMA mapping of 5 pages is refused");
}

/* Private mappings: mmap() only, never touched, so a kernel without the fix survives this */
static void test_private_refused(struct xive *x)
{
	expect_refused(x, KVM_XIVE_ESB_PAGE_OFFSET, 2, MAP_PRIVATE, 1,
		       "private ESB mapping is refused (mmap only, no load)");
	expect_refused(x, KVM_XIVE_TIMA_PAGE_OFFSET, 4, MAP_PRIVATE, 1,
		       "private TIMA mapping is refused (mmap only, no load)");
}

/* mremap() must not grow an ESB mapping past what mmap() checked */
static void test_no_expand(struct xive *x)
{
	void *m, *r;
	int ok;

	m = dev_map(x, KVM_XIVE_ESB_PAGE_OFFSET, 2, MAP_SHARED);
	if (m == MAP_FAILED) {
		result(0, 0, "mremap() cannot grow an ESB mapping", "mmap: %s", strerror(errno));
		return;
	}
	r = mremap(m, 2 * page, 4 * page, MREMAP_MAYMOVE);
	ok = r == MAP_FAILED && errno == EFAULT;
	result(ok, 0, "mremap() cannot grow an ESB mapping",
	       ok ? "EFAULT" : r == MAP_FAILED ? "%s" : "grown", strerror(errno));
	munmap(r == MAP_FAILED ? m : r, (r == MAP_FAILED ? 2 : 4) * page);
}

/* --- the crash case ----------------------------------------------------------------------------- */

/* Kernel log lines with "kernel BUG at" or "xive_native_esb_fault", printed as diagnostics */
static int kernel_bug_logged(void)
{
	int len = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
	int bug = 0, fault = 0;
	char *buf, *line, *save;

	if (len <= 0)
		len = 1 << 20;
	buf = calloc(1, len + 1);
	if (!buf)
		return 0;
	len = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, len);
	if (len < 0) {
		diag("klogctl: %s", strerror(errno));
		free(buf);
		return 0;
	}
	buf[len] = 0;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strstr(line, "kernel BUG at mm/memory.c")) {
			bug = 1;
			diag("kernel log: %s", line);
		}
		if (strstr(line, "xive_native_esb_fault")) {
			fault = 1;
			diag("kernel log: %s", line);
		}
	}
	free(buf);
	return bug && fault;
}

static int crash_case(void)
{
	const char *name = "load through a private ESB mapping cannot reach the kernel's BUG_ON";
	struct timespec t = { 0, 100 * 1000 * 1000 };
	char err[160];
	struct xive x;
	int status, i;
	pid_t pid;

	printf("TAP version 13\n");
	diag("crash case: a child maps source 0's ESB pages MAP_PRIVATE and loads once");
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		void *m;

		if (xive_open(&x, err, sizeof(err)) || source_configure(&x, 0)) {
			diag("child: set up: %s", *err ? err : strerror(errno));
			_exit(3);
		}
		m = mmap(NULL, 2 * page, PROT_READ, MAP_PRIVATE, x.dev,
			 KVM_XIVE_ESB_PAGE_OFFSET * page);
		if (m == MAP_FAILED) {
			diag("child: private mapping refused: %s", strerror(errno));
			_exit(errno == EINVAL ? 0 : 2);
		}
		diag("child: private mapping accepted at %p; loading ESB_GET of source 0 (a kernel without the fix BUG()s now)",
		     m);
		diag("child: load returned PQ %u: the kernel survived", esb_load(m, XIVE_ESB_GET));
		_exit(1);
	}
	if (pid < 0) {
		result(0, 0, name, "fork: %s", strerror(errno));
		return finish();
	}
	/* A child killed in the kernel may never be reaped (it can hold its mm's locks): poll, 30 s */
	for (i = 0; i < 300; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		nanosleep(&t, NULL);
	}
	if (i < 300 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		result(1, 0, name, "the private mapping was refused with EINVAL");
	} else if (i < 300 && WIFEXITED(status) && WEXITSTATUS(status) == 3) {
		result(0, 0, name, "the child could not set up the device");
	} else {
		int bug = kernel_bug_logged();

		if (i == 300)
			diag("the child did not exit within 30 s");
		else if (WIFSIGNALED(status))
			diag("the child was killed by signal %d", WTERMSIG(status));
		else
			diag("the child exited with status %d", WEXITSTATUS(status));
		if (bug) {
			diag("reproduced: kernel BUG at mm/memory.c in vmf_insert_pfn_prot() from xive_native_esb_fault()");
			result(0, 1, name, "reproduced: host kernel BUG from the load");
		} else {
			result(0, 1, name, "the private mapping was accepted; no kernel BUG found in the log");
		}
	}
	return finish();
}

int main(int argc, char **argv)
{
	char err[160] = "", *win = NULL;
	int crash = 0, i, s;
	struct xive x;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--crash-case")) {
			crash = 1;
		} else if (!strncmp(argv[i], "--expect=", 9)) {
			if (!strcmp(argv[i] + 9, "stock")) {
				expect_stock = 1;
			} else if (strcmp(argv[i] + 9, "patched")) {
				fprintf(stderr, "--expect=stock|patched, not '%s'\n", argv[i] + 9);
				return 2;
			}
		} else if (!strncmp(argv[i], "--label=", 8)) {
			label = argv[i] + 8;
		} else {
			fprintf(stderr, "usage: %s [--expect=stock|patched] [--label=NAME] [--crash-case]\n",
				argv[0]);
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	page = sysconf(_SC_PAGESIZE);
	if (crash)
		return crash_case();

	printf("TAP version 13\n");
	diag("page size %ld, expecting a %s kernel", page, expect_stock ? "stock" : "patched");
	if (xive_open(&x, err, sizeof(err))) {
		skip("KVM XIVE native device", err);
		finish();
		return KSFT_SKIP;
	}
	for (s = 0; s < NR_SOURCES; s++)
		if (source_configure(&x, s)) {
			result(0, 0, "configure sources 0-7 (KVM_DEV_XIVE_GRP_SOURCE)", "source %d: %s",
			       s, strerror(errno));
			return finish();
		}
	result(1, 0, "VM, XIVE device, sources 0-7 configured (KVM_DEV_XIVE_GRP_SOURCE)", NULL);

	test_whole_window(&x, &win);
	test_per_irq_offsets(&x, win);
	test_past_window(&x);
	test_split_mapping(&x, win);
	test_tima(&x);
	test_private_refused(&x);
	test_no_expand(&x);
	return finish();
}
