/*
 * The floor for `overlayVsC` in bench/bench.ts: the same two mmap(MAP_FIXED) calls an attach and
 * a detach make, issued straight from C, on the same kind of region.
 *
 * An IPI memfd of nr_irqs × bytes_per_irq is mapped once (the region); a passthrough memfd of
 * pt_irqs × bytes_per_irq is the source. Every page of the region is read once first, as a running
 * guest has them all mapped. Each cycle then:
 *   - reads the interrupt's pages again (untimed: the previous cycle's detach dropped their PTEs),
 *   - times  mmap(irq's address, bytes_per_irq, RW, SHARED|FIXED, pt_fd, pt_irq × bytes_per_irq)
 *            mmap(irq's address, bytes_per_irq, RW, SHARED|FIXED, ipi_fd, irq × bytes_per_irq)
 * exactly as bench.ts does around `esb.attach(irq, source)` + `esb.detach(irq)`.
 * With UNPOPULATED=1 the pages are not read (first or before each cycle): nothing to zap.
 *
 * THREADS / WAKE_US make the floor fair to a multi-threaded process: THREADS more threads that
 * sleep WAKE_US microseconds in a loop (as V8's platform workers and a VMM's vCPU threads wake),
 * or spin if WAKE_US is 0. Once a thread of the process has run on another CPU, the kernel must
 * flush that CPU's TLB too when a mapping changes (a shootdown IPI), which a one-thread process
 * never pays. The TLB shootdown and function-call IPIs the whole machine counted during the
 * cycles (/proc/interrupts TLB and CAL, summed over CPUs: other processes add theirs) are printed
 * per cycle, with the main thread's system and user CPU time per cycle (getrusage, touch included).
 *
 * usage: overlay NR_IRQS BYTES_PER_IRQ PT_IRQS CYCLES [EXTRA_VMAS [THREADS [WAKE_US [UNPOPULATED]]]]
 * prints one JSON line: {"cycles":N,"median_ns":…,"p10_ns":…,"p90_ns":…,"min_ns":…,"threads":…,"tlb_per_cycle":…}
 * Built by bench.ts with the system compiler (`cc -O2`) into dist/bench/; no dependencies.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/resource.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Read one byte of every host page in [p, p+len): maps them, as a guest's loads would. */
static void touch(const volatile uint8_t *p, size_t len, size_t page)
{
	uint8_t sink = 0;
	for (size_t off = 0; off < len; off += page)
		sink ^= p[off];
	(void)sink;
}

/* Sum of a line of /proc/interrupts ("TLB:", "CAL:") over all CPUs (x86; -1 where there is none). */
static long long irq_count(const char *name)
{
	FILE *f = fopen("/proc/interrupts", "r");
	char line[4096];
	long long sum = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f)) {
		char *p = line;
		while (*p == ' ')
			p++;
		if (strncmp(p, name, 4) != 0)
			continue;
		sum = 0;
		p += 4;
		for (;;) {
			char *end;
			long long v = strtoll(p, &end, 10);
			if (end == p)
				break;
			sum += v;
			p = end;
		}
	}
	fclose(f);
	return sum;
}

static volatile int stop;
static long wake_us;

static void *waker(void *arg)
{
	(void)arg;
	struct timespec ts = { .tv_sec = wake_us / 1000000, .tv_nsec = (wake_us % 1000000) * 1000 };
	while (!stop) {
		if (wake_us)
			nanosleep(&ts, NULL);
	}
	return NULL;
}

static int memfd(const char *name, size_t size)
{
	int fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0)
		die("memfd_create");
	if (ftruncate(fd, (off_t)size) < 0)
		die("ftruncate");
	return fd;
}

int main(int argc, char **argv)
{
	if (argc < 5 || argc > 9) {
		fprintf(stderr, "usage: %s NR_IRQS BYTES_PER_IRQ PT_IRQS CYCLES [EXTRA_VMAS [THREADS [WAKE_US [UNPOPULATED]]]]\n", argv[0]);
		return 2;
	}
	size_t nr_irqs = strtoull(argv[1], NULL, 0);
	size_t bpi = strtoull(argv[2], NULL, 0);
	size_t pt_irqs = strtoull(argv[3], NULL, 0);
	size_t cycles = strtoull(argv[4], NULL, 0);
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t threads = argc >= 7 ? strtoull(argv[6], NULL, 0) : 0;
	wake_us = argc >= 8 ? strtol(argv[7], NULL, 0) : 1000;
	int unpopulated = argc >= 9 && strtol(argv[8], NULL, 0) != 0;
	if (!nr_irqs || !pt_irqs || !cycles || !bpi || bpi % page || threads > 256 || wake_us < 0)
		return 2;
	pthread_t tids[256];
	for (size_t i = 0; i < threads; i++)
		if (pthread_create(&tids[i], NULL, waker, NULL) != 0)
			die("pthread_create");

	int ipi = memfd("overlay-ipi", nr_irqs * bpi);
	int pt = memfd("overlay-pt", pt_irqs * bpi);
	uint8_t *region = mmap(NULL, nr_irqs * bpi, PROT_READ | PROT_WRITE, MAP_SHARED, ipi, 0);
	if (region == MAP_FAILED)
		die("mmap region");
	if (!unpopulated)
		touch(region, nr_irqs * bpi, page);

	/* EXTRA_VMAS: give this process as many more VMAs as a bigger one (a Node VMM) has, one
	 * read-only page every other page of a PROT_NONE reservation, to show what the kernel's own
	 * cost of the same two calls owes to the size of the process. */
	size_t extra = argc == 6 ? strtoull(argv[5], NULL, 0) / 2 : 0;
	if (extra) {
		uint8_t *r = mmap(NULL, 2 * extra * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (r == MAP_FAILED)
			die("mmap reservation");
		for (size_t i = 0; i < extra; i++)
			if (mmap(r + 2 * i * page, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
				die("mmap extra VMA");
	}

	uint64_t *ns = calloc(cycles, sizeof *ns);
	if (!ns)
		die("calloc");
	if (threads) {
		/* Let every thread run once (and so land on a CPU) before the first timed cycle. */
		struct timespec settle = { .tv_sec = 0, .tv_nsec = 5 * 1000 * 1000 };
		nanosleep(&settle, NULL);
	}
	long long tlb0 = irq_count("TLB:"), cal0 = irq_count("CAL:");
	struct rusage ru0, ru1;
	getrusage(RUSAGE_THREAD, &ru0);
	for (size_t c = 0; c < cycles; c++) {
		size_t irq = c % nr_irqs, src = c % pt_irqs;
		uint8_t *at = region + irq * bpi;
		if (!unpopulated)
			touch(at, bpi, page);
		uint64_t t0 = now_ns();
		if (mmap(at, bpi, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, pt, (off_t)(src * bpi)) != at)
			die("mmap attach");
		if (mmap(at, bpi, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, ipi, (off_t)(irq * bpi)) != at)
			die("mmap detach");
		ns[c] = now_ns() - t0;
	}
	getrusage(RUSAGE_THREAD, &ru1);
	long long tlb1 = irq_count("TLB:"), cal1 = irq_count("CAL:");
	double sys_ns = ((ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1e9 + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) * 1e3) / (double)cycles;
	double user_ns = ((ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) * 1e9 + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) * 1e3) / (double)cycles;
	stop = 1;
	for (size_t i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	qsort(ns, cycles, sizeof *ns, cmp_u64);
	printf("{\"cycles\":%zu,\"median_ns\":%llu,\"p10_ns\":%llu,\"p90_ns\":%llu,\"min_ns\":%llu,\"threads\":%zu,\"tlb_per_cycle\":%.2f,\"cal_per_cycle\":%.2f,\"sys_ns_per_cycle\":%.0f,\"user_ns_per_cycle\":%.0f}\n", cycles,
	       (unsigned long long)ns[cycles / 2], (unsigned long long)ns[cycles / 10],
	       (unsigned long long)ns[cycles * 9 / 10], (unsigned long long)ns[0], threads + 1,
	       tlb0 >= 0 && tlb1 >= 0 ? (double)(tlb1 - tlb0) / (double)cycles : -1.0,
	       cal0 >= 0 && cal1 >= 0 ? (double)(cal1 - cal0) / (double)cycles : -1.0, sys_ns, user_ns);
	return 0;
}
