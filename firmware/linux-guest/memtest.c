/*
 * memtest: the Linux guest's memory checker for scripts/qemu-linux-test.
 *
 *   memtest HOT_MIB COLD_MIB SECONDS NPROC
 *
 * The hypervisor under test rewrites the guest's stage 2 translation while
 * this program runs (write-protects pages for dirty logging, migrates pages to
 * other frames, splits and collapses 2 MiB blocks, swaps pages out and in).
 * If it ever leaves a stale translation behind, a write lands in a frame the
 * guest no longer owns, or a read sees an old frame: that shows up here as a
 * word that does not hold what was last written to it.
 *
 * NPROC processes (fork) each map two private anonymous buffers:
 *   hot   HOT_MIB MiB, rewritten with a new pattern on every pass and then
 *         read back: catches lost writes and reads of stale frames of pages
 *         the guest keeps dirtying;
 *   cold  COLD_MIB MiB, written once and read back on every pass: catches
 *         migration (or swap) of pages the guest only reads.
 * Each process runs passes until SECONDS have gone by on CLOCK_MONOTONIC (on
 * arm64 the vDSO reads the virtual counter CNTVCT_EL0, the guest's own clock);
 * it always completes at least one pass.
 *
 * A frame the hypervisor migrated away from is filled with words whose top 16
 * bits are 0xdead; a mismatching word of that form is counted as "poison"
 * (a read through a translation to a frame given up) as well as an error.
 * The patterns below never produce such a word themselves.
 *
 * Output (one line per write, so lines of several processes do not mix):
 *   MEMTEST [id] progress passes=N errors=N poison=N secs=S       about every 2 s
 *   MEMTEST [id] hot|cold mismatch pass=N word=W offset=0xB va=0xV got=0xX want=0xY
 *   MEMTEST POISON [id] hot|cold pass=N word=W va=0xV got=0xX     for a poison read
 *   MEMTEST PASS|FAIL [id] passes=N words=N errors=N poison=N hot=NMiB cold=NMiB secs=S
 *   MEMTEST PASS (all N processes)   or   MEMTEST FAIL (K of N processes failed)
 * Only the first few mismatches of each process are printed; all are counted.
 * Exit status: 0 if every process passed, 1 otherwise, 2 for bad arguments.
 *
 * Build: aarch64-linux-gnu-gcc -O2 -static -o memtest memtest.c
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORDS_PER_MIB ((size_t)1 << 17) /* 8-byte words in 1 MiB */
#define MAX_MIB 4096
#define MAX_NPROC 64
#define PROGRESS_SECS 2.0
#define MISMATCHES_SHOWN 8 /* per process */
#define POISON_SHOWN 8     /* per process */
#define POISON_TAG 0xdeadu
#define COLD_PASS 0xc01dc01dull /* the "pass number" of the cold pattern */

/* Keeps the compiler from carrying values between the write and the
 * read-back loops: every read must come from memory. */
#define MEMORY_BARRIER() __asm__ __volatile__("" ::: "memory")

struct buffer {
    const char *name;
    uint64_t *words;
    size_t count;
};

struct counts {
    uint64_t passes;
    uint64_t words; /* words written plus words read back */
    uint64_t errors;
    uint64_t poison;
};

static double now_secs(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int is_poison(uint64_t v)
{
    return (v >> 48) == POISON_TAG;
}

/* The value of word `index` in pass `pass` of the process with `salt`: a
 * cheap mix (splitmix64 finaliser) so that neighbouring words, passes and
 * processes all differ. Never a poison word. */
static uint64_t pattern(uint64_t index, uint64_t pass, uint64_t salt)
{
    uint64_t x = index * 0x9e3779b97f4a7c15ull + (pass + 1) * 0xbf58476d1ce4e5b9ull + salt;

    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    if (is_poison(x))
        x ^= 1ull << 63;
    return x;
}

static int map_buffer(struct buffer *b, const char *name, size_t mib)
{
    size_t bytes = mib * WORDS_PER_MIB * sizeof(uint64_t);
    void *p;

    b->name = name;
    b->count = mib * WORDS_PER_MIB;
    b->words = NULL;
    if (bytes == 0)
        return 0;
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    b->words = p;
    return 0;
}

static void fill(const struct buffer *b, uint64_t pass, uint64_t salt)
{
    for (size_t i = 0; i < b->count; i++)
        b->words[i] = pattern(i, pass, salt);
}

/* Reads every word of `b` back and compares it with the pattern of `pass`.
 * A wrong word is reported (the first few), counted, and rewritten, so that
 * one bad word is not counted again on every later pass of a cold buffer. */
static void verify(int id, const struct buffer *b, uint64_t pass, uint64_t report_pass, uint64_t salt,
                   struct counts *c)
{
    for (size_t i = 0; i < b->count; i++) {
        uint64_t want = pattern(i, pass, salt);
        uint64_t got = b->words[i];

        if (got == want)
            continue;
        if (c->errors < MISMATCHES_SHOWN)
            printf("MEMTEST [%d] %s mismatch pass=%llu word=%zu offset=%#zx va=%p got=%#018llx want=%#018llx\n",
                   id, b->name, (unsigned long long)report_pass, i, i * sizeof(uint64_t), (void *)&b->words[i],
                   (unsigned long long)got, (unsigned long long)want);
        c->errors++;
        if (is_poison(got)) {
            if (c->poison < POISON_SHOWN)
                printf("MEMTEST POISON [%d] %s pass=%llu word=%zu va=%p got=%#018llx\n", id, b->name,
                       (unsigned long long)report_pass, i, (void *)&b->words[i], (unsigned long long)got);
            c->poison++;
        }
        b->words[i] = want;
    }
}

/* One process's whole test; returns its exit status. */
static int run(int id, size_t hot_mib, size_t cold_mib, double secs)
{
    uint64_t salt = 0x5bd1e9955bd1e995ull * (uint64_t)(id + 1);
    struct buffer hot, cold;
    struct counts c = { 0 };
    double start, elapsed, last_progress = 0.0;

    if (map_buffer(&hot, "hot", hot_mib) != 0 || map_buffer(&cold, "cold", cold_mib) != 0) {
        printf("MEMTEST FAIL [%d] mmap of %zu+%zu MiB failed: %s\n", id, hot_mib, cold_mib, strerror(errno));
        return 1;
    }
    fill(&cold, COLD_PASS, salt);
    c.words += cold.count;

    start = now_secs();
    do {
        fill(&hot, c.passes, salt);
        MEMORY_BARRIER();
        verify(id, &hot, c.passes, c.passes, salt, &c);
        verify(id, &cold, COLD_PASS, c.passes, salt, &c);
        MEMORY_BARRIER();
        c.words += 2 * hot.count + cold.count;
        c.passes++;

        elapsed = now_secs() - start;
        if (elapsed - last_progress >= PROGRESS_SECS) {
            printf("MEMTEST [%d] progress passes=%llu errors=%llu poison=%llu secs=%.1f\n", id,
                   (unsigned long long)c.passes, (unsigned long long)c.errors, (unsigned long long)c.poison,
                   elapsed);
            last_progress = elapsed;
        }
    } while (elapsed < secs);

    printf("MEMTEST %s [%d] passes=%llu words=%llu errors=%llu poison=%llu hot=%zuMiB cold=%zuMiB secs=%.1f\n",
           c.errors ? "FAIL" : "PASS", id, (unsigned long long)c.passes, (unsigned long long)c.words,
           (unsigned long long)c.errors, (unsigned long long)c.poison, hot_mib, cold_mib, elapsed);
    return c.errors ? 1 : 0;
}

static int parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 0);
    if (errno != 0 || end == s || *end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

static int usage(const char *why)
{
    fprintf(stderr, "memtest: %s\nusage: memtest HOT_MIB COLD_MIB SECONDS NPROC\n", why);
    return 2;
}

int main(int argc, char **argv)
{
    unsigned long hot_mib, cold_mib, secs, nproc;
    pid_t pids[MAX_NPROC];
    int failed = 0;

    if (argc != 5)
        return usage("expected 4 arguments");
    if (parse_ulong(argv[1], MAX_MIB, &hot_mib) || parse_ulong(argv[2], MAX_MIB, &cold_mib) ||
        parse_ulong(argv[3], 24 * 3600, &secs) || parse_ulong(argv[4], MAX_NPROC, &nproc) || nproc == 0)
        return usage("bad argument");

    /* Line buffered: each line goes out in one write(2). */
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("MEMTEST start hot=%luMiB cold=%luMiB secs=%lu nproc=%lu\n", hot_mib, cold_mib, secs, nproc);

    for (unsigned long i = 0; i < nproc; i++) {
        pids[i] = fork();
        if (pids[i] < 0) {
            printf("MEMTEST FAIL [%lu] fork failed: %s\n", i, strerror(errno));
            failed++;
        } else if (pids[i] == 0) {
            int status = run((int)i, hot_mib, cold_mib, (double)secs);

            fflush(stdout);
            _exit(status);
        }
    }

    /* Every process's fate is reported, a crash (say a SIGSEGV or SIGBUS
     * from a broken translation) included. */
    for (unsigned long i = 0; i < nproc; i++) {
        int status;

        if (pids[i] <= 0)
            continue;
        if (waitpid(pids[i], &status, 0) < 0) {
            printf("MEMTEST FAIL [%lu] waitpid: %s\n", i, strerror(errno));
            failed++;
        } else if (WIFSIGNALED(status)) {
            printf("MEMTEST FAIL [%lu] killed by signal %d\n", i, WTERMSIG(status));
            failed++;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            failed++;
        }
    }

    if (failed)
        printf("MEMTEST FAIL (%d of %lu processes failed)\n", failed, nproc);
    else
        printf("MEMTEST PASS (all %lu processes)\n", nproc);
    return failed ? 1 : 0;
}
