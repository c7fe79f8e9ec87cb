// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * maglev_ref.c - plain C reference of the xlb Maglev table (xlb/maglev.py).
 *
 * It implements the specification in the docstring of xlb/maglev.py the
 * straightforward way: canonical order, FNV-1a + splitmix64 permutations,
 * largest-remainder quotas, then the sequential rank-by-rank greedy fill.
 * xlb/maglev.py computes the same table with a vectorised deferred
 * acceptance; tests/unit/test_maglev.py checks that both agree entry for
 * entry, and bench/maglev_bench.py compares their speed.
 *
 * Usage: maglev_ref SIZE [REPEAT] [--dump] < reals
 *   reals: one real per line, "ADDRESS [WEIGHT]" (IPv4 or IPv6 text,
 *          weight a non-negative integer below 2^32, default 1).
 * Prints "n=N size=SIZE best_ns=T best_cpu_ns=U checksum=C" where T is the
 * fastest of REPEAT builds (default 1) timed from parsed addresses to
 * finished table, U the least CPU time of the thread among them,
 * and C = sum over i of (table[i] + 1) * (2i + 1) mod 2^64. With --dump it
 * then prints the table, one entry per line (-1 for an empty slot).
 *
 * Build: gcc -O2 -Wall -Wextra -o maglev_ref bench/maglev_ref.c
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SIZE 655373u
#define MAX_LINE 256

struct real {
	uint8_t addr[16];
	uint8_t len; /* 4 or 16 */
	uint32_t weight;
	uint32_t input_index; /* position in the input, reported in the table */
};

static void die(const char *msg)
{
	fprintf(stderr, "maglev_ref: %s\n", msg);
	exit(2);
}

/* ---- Specification helpers: each mirrors a function in xlb/maglev.py --- */

static uint64_t fnv1a64(const uint8_t *data, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= data[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static uint64_t splitmix64_mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

#define GOLDEN_GAMMA 0x9e3779b97f4a7c15ull

/* Canonical order: IPv4 before IPv6, then by address bytes. */
static int compare_reals(const void *a, const void *b)
{
	const struct real *x = a, *y = b;

	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return memcmp(x->addr, y->addr, x->len);
}

struct remainder {
	uint64_t value;
	uint32_t index;
};

/* Largest remainder first; equal remainders in canonical order. */
static int compare_remainders(const void *a, const void *b)
{
	const struct remainder *x = a, *y = b;

	if (x->value != y->value)
		return x->value > y->value ? -1 : 1;
	return x->index < y->index ? -1 : (x->index > y->index);
}

/*
 * Build the table for reals[0..n) (already in canonical order) into
 * table[0..size). Scratch arrays are passed in so that timing measures
 * the algorithm, not malloc.
 */
struct scratch {
	uint32_t *participant; /* canonical index of each participant */
	uint64_t *quota;
	uint64_t *held;
	uint64_t *position; /* current preferred slot of each participant */
	uint64_t *skip;
	uint32_t *active;
	struct remainder *rems;
};

static void compute_quotas(const struct real *reals, uint32_t m, const uint32_t *participant,
			   uint64_t size, struct scratch *s)
{
	uint64_t total_weight = 0, assigned = 0;

	for (uint32_t j = 0; j < m; j++)
		total_weight += reals[participant[j]].weight;
	for (uint32_t j = 0; j < m; j++) {
		/* size < 2^20 and weight < 2^32: the product fits in 64 bits. */
		uint64_t scaled = size * reals[participant[j]].weight;

		s->quota[j] = scaled / total_weight;
		assigned += s->quota[j];
		s->rems[j].value = scaled % total_weight;
		s->rems[j].index = j;
	}
	qsort(s->rems, m, sizeof(s->rems[0]), compare_remainders);
	for (uint64_t r = 0; r < size - assigned; r++)
		s->quota[s->rems[r].index]++;
}

static void build_table(const struct real *reals, uint32_t n, uint32_t size, int32_t *table,
			struct scratch *s)
{
	uint32_t m = 0, n_active = 0;

	for (uint32_t i = 0; i < size; i++)
		table[i] = -1;
	for (uint32_t i = 0; i < n; i++)
		if (reals[i].weight > 0)
			s->participant[m++] = i;
	if (m == 0)
		return;

	compute_quotas(reals, m, s->participant, size, s);
	for (uint32_t j = 0; j < m; j++) {
		const struct real *r = &reals[s->participant[j]];
		uint64_t h = fnv1a64(r->addr, r->len);

		s->position[j] = splitmix64_mix(h + GOLDEN_GAMMA) % size;
		s->skip[j] = splitmix64_mix(h + 2 * GOLDEN_GAMMA) % (size - 1) + 1;
		s->held[j] = 0;
		if (s->quota[j] > 0)
			s->active[n_active++] = j;
	}

	/*
	 * Rank by rank, participants in canonical order: each one still below
	 * its quota takes its rank-k preferred slot if that slot is free.
	 */
	while (n_active > 0) {
		uint32_t kept = 0;

		for (uint32_t a = 0; a < n_active; a++) {
			uint32_t j = s->active[a];
			uint64_t slot = s->position[j];

			if (table[slot] < 0) {
				table[slot] = (int32_t)j;
				s->held[j]++;
			}
			slot += s->skip[j];
			s->position[j] = slot >= size ? slot - size : slot;
			if (s->held[j] < s->quota[j])
				s->active[kept++] = j;
		}
		n_active = kept;
	}
	/* Participant index -> canonical index -> input index. */
	for (uint32_t i = 0; i < size; i++)
		table[i] = (int32_t)reals[s->participant[table[i]]].input_index;
}

/* ---- Driver -------------------------------------------------------------- */

static int parse_real(char *line, struct real *r, uint32_t index)
{
	char *addr = strtok(line, " \t\r\n");
	char *weight = strtok(NULL, " \t\r\n");

	if (!addr)
		return 0;
	memset(r, 0, sizeof(*r));
	if (inet_pton(AF_INET, addr, r->addr) == 1)
		r->len = 4;
	else if (inet_pton(AF_INET6, addr, r->addr) == 1)
		r->len = 16;
	else
		die("bad address");
	r->weight = 1;
	if (weight) {
		char *end;
		unsigned long long w = strtoull(weight, &end, 10);

		if (*end || weight[0] == '-' || w > UINT32_MAX)
			die("bad weight");
		r->weight = (uint32_t)w;
	}
	r->input_index = index;
	return 1;
}

static struct real *read_reals(uint32_t *count)
{
	size_t cap = 1024;
	struct real *reals = malloc(cap * sizeof(*reals));
	char line[MAX_LINE];
	uint32_t n = 0;

	if (!reals)
		die("out of memory");
	while (fgets(line, sizeof(line), stdin)) {
		if (n == cap) {
			cap *= 2;
			reals = realloc(reals, cap * sizeof(*reals));
			if (!reals)
				die("out of memory");
		}
		n += (uint32_t)parse_real(line, &reals[n], n);
	}
	*count = n;
	return reals;
}

static uint64_t now_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int is_prime(uint32_t v)
{
	if (v < 2)
		return 0;
	for (uint32_t d = 2; (uint64_t)d * d <= v; d++)
		if (v % d == 0)
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	struct scratch s;
	struct real *input, *reals;
	uint32_t n, size, repeat = 1, m = 0;
	uint64_t best = UINT64_MAX, best_cpu = UINT64_MAX, checksum = 0;
	int dump = 0;
	int32_t *table;

	if (argc < 2)
		die("usage: maglev_ref SIZE [REPEAT] [--dump] < reals");
	size = (uint32_t)strtoul(argv[1], NULL, 10);
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--dump") == 0)
			dump = 1;
		else
			repeat = (uint32_t)strtoul(argv[i], NULL, 10);
	}
	if (!is_prime(size) || size > MAX_SIZE)
		die("SIZE must be a prime no larger than 655373");
	input = read_reals(&n);
	for (uint32_t i = 0; i < n; i++)
		m += input[i].weight > 0;
	if (m > size)
		die("more weighted reals than slots");

	reals = malloc((n + 1) * sizeof(*reals));
	table = malloc(size * sizeof(*table));
	s.participant = malloc((n + 1) * sizeof(*s.participant));
	s.quota = malloc((n + 1) * sizeof(*s.quota));
	s.held = malloc((n + 1) * sizeof(*s.held));
	s.position = malloc((n + 1) * sizeof(*s.position));
	s.skip = malloc((n + 1) * sizeof(*s.skip));
	s.active = malloc((n + 1) * sizeof(*s.active));
	s.rems = malloc((n + 1) * sizeof(*s.rems));
	if (!reals || !table || !s.participant || !s.quota || !s.held || !s.position || !s.skip ||
	    !s.active || !s.rems)
		die("out of memory");

	for (uint32_t r = 0; r < (repeat ? repeat : 1); r++) {
		uint64_t start = now_ns(CLOCK_MONOTONIC),
			 start_cpu = now_ns(CLOCK_THREAD_CPUTIME_ID);
		uint64_t elapsed, elapsed_cpu;

		/* Sorting is part of the algorithm, so it is inside the timing. */
		memcpy(reals, input, n * sizeof(*reals));
		qsort(reals, n, sizeof(*reals), compare_reals);
		for (uint32_t i = 1; i < n; i++)
			if (compare_reals(&reals[i - 1], &reals[i]) == 0)
				die("duplicate address");
		build_table(reals, n, size, table, &s);
		elapsed_cpu = now_ns(CLOCK_THREAD_CPUTIME_ID) - start_cpu;
		elapsed = now_ns(CLOCK_MONOTONIC) - start;
		if (elapsed < best)
			best = elapsed;
		if (elapsed_cpu < best_cpu)
			best_cpu = elapsed_cpu;
	}

	for (uint32_t i = 0; i < size; i++)
		checksum += (uint64_t)(int64_t)(table[i] + 1) * (2ull * i + 1);
	printf("n=%u size=%u best_ns=%" PRIu64 " best_cpu_ns=%" PRIu64 " checksum=%" PRIu64 "\n", n,
	       size, best, best_cpu, checksum);
	if (dump)
		for (uint32_t i = 0; i < size; i++)
			printf("%d\n", table[i]);
	return 0;
}
