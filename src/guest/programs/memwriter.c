/*
 * memwriter: dirties guest memory at a controlled rate and can prove, at any moment, that every
 * byte of its working set still holds what it last wrote. Migration tests use it both as load
 * (dirty pages the migrator has to chase) and as the oracle that memory survived.
 *
 *   memwriter [--wss-mib N] [--hot-mib N] [--rate PAGES_PER_SEC] [--touch-ms MS] [--duration S]
 *             [--report-ms MS] [--verify-every S] [--seed N] [--once] [--inject-fault]
 *
 * The whole --wss-mib region is filled once with non-zero content; after that, writes go to
 * random pages of its first --hot-mib MiB only (default: the whole region), so the rest of the
 * region is cold, non-zero data. --touch-ms MS reads one word of every hot page every MS
 * milliseconds (default 0: never), so the hot set stays in an access-based working-set estimate
 * even when --rate revisits each page only rarely. Writes are paced in batches: one wake-up per
 * BATCH_NS at most, so high rates (tens of thousands of pages/s) do not cost a sleep per page.
 *
 * Every page's content is a pure function of (page index, that page's generation counter), so
 * the expected content of the whole region is always known from the generation array alone.
 * Verification happens on SIGUSR1, every --verify-every seconds, and at exit.
 *
 * Lines printed (stable, tests parse them):
 *   memwriter: ready pid=<pid> wss_pages=<n>
 *   memwriter: writes=<w> rate=<pages/s>
 *   memwriter: verify ok pages=<n> writes=<w> checksum=<hex>
 *   memwriter: verify FAILED page=<i> word=<k> expected=<hex> got=<hex> bad_pages=<n> writes=<w>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Odd, so `seed + k * STEP` gives a distinct value for every word of a page. */
#define STEP 0x9e3779b97f4a7c15ULL
/* Shortest sleep between batches of paced writes (5 ms: 200 wake-ups/s at most). */
#define BATCH_NS 5000000ULL

static volatile sig_atomic_t verify_requested;
static volatile sig_atomic_t stop_requested;

static uint8_t *mem;
static size_t page_size, npages, words_per_page;
static size_t hot_pages;       /* writes go to pages [0, hot_pages) */
static uint32_t *gen;          /* per-page generation: how many times the page was rewritten */
static uint64_t checksum;      /* XOR of every page's current seed, updated on each write */
static uint64_t writes;        /* page writes after the initial fill */
static int any_failure;

/* splitmix64 finaliser: a bijection, so distinct (page, gen) pairs never share a seed. */
static uint64_t mix64(uint64_t x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t page_seed(size_t page, uint32_t g) {
    return mix64(((uint64_t)page << 32) | g);
}

/* Cheap per word (an add), because in an emulated guest the writer itself must not be the bottleneck. */
static void stamp(size_t page) {
    uint64_t *w = (uint64_t *)(mem + page * page_size);
    uint64_t v = page_seed(page, gen[page]);
    for (size_t k = 0; k < words_per_page; k++, v += STEP) w[k] = v;
}

static void write_page(size_t page) {
    checksum ^= page_seed(page, gen[page]);
    gen[page]++;
    checksum ^= page_seed(page, gen[page]);
    stamp(page);
    writes++;
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static void sleep_until(uint64_t ns) {
    struct timespec t = { (time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL) };
    /* EINTR is wanted: a signal should be handled now, not after the sleep. */
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
}

/* Checks every word of every page, and the running checksum against one rebuilt from memory. */
static int verify(void) {
    size_t bad_pages = 0, first_page = 0, first_word = 0;
    uint64_t first_expected = 0, first_got = 0, from_memory = 0, from_gens = 0;
    for (size_t p = 0; p < npages; p++) {
        const uint64_t *w = (const uint64_t *)(mem + p * page_size);
        uint64_t seed = page_seed(p, gen[p]);
        from_gens ^= seed;
        from_memory ^= w[0];
        uint64_t v = seed;
        for (size_t k = 0; k < words_per_page; k++, v += STEP) {
            if (w[k] != v) {
                if (bad_pages == 0) { first_page = p; first_word = k; first_expected = v; first_got = w[k]; }
                bad_pages++;
                break;
            }
        }
    }
    if (bad_pages > 0) {
        printf("memwriter: verify FAILED page=%zu word=%zu expected=%016" PRIx64 " got=%016" PRIx64
               " bad_pages=%zu writes=%" PRIu64 "\n",
               first_page, first_word, first_expected, first_got, bad_pages, writes);
    } else if (from_gens != checksum || from_memory != checksum) {
        /* Pages agree with the generation array but not with the running checksum: the
         * bookkeeping itself (which lives in guest memory too) was corrupted. */
        printf("memwriter: verify FAILED checksum expected=%016" PRIx64 " from_gens=%016" PRIx64
               " from_memory=%016" PRIx64 " writes=%" PRIu64 "\n", checksum, from_gens, from_memory, writes);
        bad_pages = 1;
    } else {
        printf("memwriter: verify ok pages=%zu writes=%" PRIu64 " checksum=%016" PRIx64 "\n", npages, writes, checksum);
    }
    if (bad_pages > 0) any_failure = 1;
    return bad_pages == 0;
}

/* xorshift64*: fast and good enough to spread writes across the hot set. */
static uint64_t rng_state;
static size_t random_page(void) {
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (size_t)((rng_state * 0x2545f4914f6cdd1dULL) % hot_pages);
}

/* Reads one word of every hot page, so an access-tracking host sees the hot set as in use. */
static volatile uint64_t touch_sink;
static void touch_hot(void) {
    uint64_t acc = 0;
    for (size_t p = 0; p < hot_pages; p++) acc += *(volatile const uint64_t *)(mem + p * page_size);
    touch_sink = acc;
}

static void on_signal(int sig) {
    if (sig == SIGUSR1) verify_requested = 1;
    else stop_requested = 1;
}

static void usage(void) {
    fprintf(stderr,
            "usage: memwriter [--wss-mib N] [--hot-mib N] [--rate PAGES_PER_SEC] [--touch-ms MS]\n"
            "                 [--duration S] [--report-ms MS] [--verify-every S] [--seed N] [--once]\n"
            "                 [--inject-fault]\n");
    exit(2);
}

static double parse_num(const char *s, double min) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= min)) usage();
    return v;
}

int main(int argc, char **argv) {
    double wss_mib = 16, rate = 0, duration = 0, verify_every = 0;
    double report_ms = 1000, seed = 1, hot_mib = -1, touch_ms = 0;
    int once = 0, inject_fault = 0;
    static const struct option longopts[] = {
        { "wss-mib", required_argument, NULL, 'w' },
        { "hot-mib", required_argument, NULL, 'H' },
        { "rate", required_argument, NULL, 'r' },
        { "touch-ms", required_argument, NULL, 't' },
        { "duration", required_argument, NULL, 'd' },
        { "report-ms", required_argument, NULL, 'p' },
        { "verify-every", required_argument, NULL, 'v' },
        { "seed", required_argument, NULL, 's' },
        { "once", no_argument, NULL, 'o' },
        { "inject-fault", no_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'w': wss_mib = parse_num(optarg, 0); break;
        case 'H': hot_mib = parse_num(optarg, 0); break;
        case 'r': rate = parse_num(optarg, 0); break;
        case 't': touch_ms = parse_num(optarg, 0); break;
        case 'd': duration = parse_num(optarg, 0); break;
        case 'p': report_ms = parse_num(optarg, 0); break;
        case 'v': verify_every = parse_num(optarg, 0); break;
        case 's': seed = parse_num(optarg, 0); break;
        case 'o': once = 1; break;
        case 'f': inject_fault = 1; break;
        default: usage();
        }
    }
    if (optind != argc) usage();

    /* Line buffering: output goes to a serial console or pipe and is read while we run. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    page_size = (size_t)sysconf(_SC_PAGESIZE);
    words_per_page = page_size / sizeof(uint64_t);
    npages = (size_t)(wss_mib * 1024 * 1024) / page_size;
    if (npages == 0) npages = 1;
    hot_pages = npages;
    if (hot_mib >= 0) {
        size_t h = (size_t)(hot_mib * 1024 * 1024) / page_size;
        if (h == 0) h = 1;
        if (h < hot_pages) hot_pages = h;
    }

    mem = mmap(NULL, npages * page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gen = calloc(npages, sizeof *gen);
    if (mem == MAP_FAILED || gen == NULL) {
        fprintf(stderr, "memwriter: cannot allocate %zu pages: %s\n", npages, strerror(errno));
        return 1;
    }
    /* Fill everything at generation 0 so the whole set is resident and has known content. */
    for (size_t p = 0; p < npages; p++) {
        stamp(p);
        checksum ^= page_seed(p, 0);
    }
    rng_state = mix64((uint64_t)seed) | 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;      /* no SA_RESTART: sleeps must wake up for signals */
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    printf("memwriter: ready pid=%d wss_pages=%zu\n", (int)getpid(), npages);

    if (once) {
        for (size_t p = 0; p < npages; p++) write_page(p);
        /* Test hook: proves the verifier catches a single flipped bit (the last page, mid-page). */
        if (inject_fault) mem[(npages - 1) * page_size + page_size / 2] ^= 0x10;
        return verify() ? 0 : 1;
    }

    const uint64_t start = now_ns();
    const uint64_t end = duration > 0 ? start + (uint64_t)(duration * 1e9) : UINT64_MAX;
    const uint64_t report_ns = (uint64_t)(report_ms * 1e6);
    const uint64_t verify_ns = (uint64_t)(verify_every * 1e9);
    uint64_t next_report = report_ns ? start + report_ns : UINT64_MAX;
    uint64_t next_verify = verify_ns ? start + verify_ns : UINT64_MAX;
    const uint64_t touch_ns = (uint64_t)(touch_ms * 1e6);
    uint64_t next_touch = touch_ns ? start + touch_ns : UINT64_MAX;
    uint64_t last_report_t = start, last_report_writes = 0;
    /* Rate limiting counts writes owed since (base_t, base_writes). */
    uint64_t base_t = start, base_writes = 0;

    while (!stop_requested) {
        uint64_t now = now_ns();
        if (now >= end) break;
        if (verify_requested || now >= next_verify) {
            verify_requested = 0;
            verify();
            if (verify_ns) next_verify = now_ns() + verify_ns;
            /* A verification pass can take long; do not repay that time as a burst of writes. */
            base_t = now_ns();
            base_writes = writes;
            continue;
        }
        if (now >= next_touch) {
            touch_hot();
            next_touch = now + touch_ns;
        }
        if (now >= next_report) {
            uint64_t dt = now - last_report_t;
            printf("memwriter: writes=%" PRIu64 " rate=%" PRIu64 "\n", writes,
                   dt ? (uint64_t)((writes - last_report_writes) * 1000000000ULL / dt) : (uint64_t)0);
            last_report_t = now;
            last_report_writes = writes;
            next_report = now + report_ns;
        }
        if (rate == 0) {
            for (int i = 0; i < 256; i++) write_page(random_page());
            continue;
        }
        uint64_t owed = (uint64_t)((double)(now - base_t) * rate / 1e9) + base_writes;
        /* After a long stall (guest paused, heavy host load) owe at most 100 ms of writes, so the
         * configured rate stays a rate and not an average with bursts. */
        uint64_t cap = (uint64_t)(rate / 10) + 1;
        if (owed > writes + cap) {
            base_t = now;
            base_writes = writes;
            owed = writes + 1;
        }
        if (writes < owed) {
            uint64_t n = owed - writes;
            if (n > 4096) n = 4096;   /* stay responsive to signals and timers */
            while (n--) write_page(random_page());
            continue;
        }
        uint64_t next_due = base_t + (uint64_t)((double)(writes + 1 - base_writes) * 1e9 / rate);
        /* Batch: sleep at least BATCH_NS, then write everything owed by then in one go. A
         * wake-up costs a guest far more than a page write, so one per page caps the rate. */
        uint64_t wake = next_due > now + BATCH_NS ? next_due : now + BATCH_NS;
        if (next_report < wake) wake = next_report;
        if (next_verify < wake) wake = next_verify;
        if (next_touch < wake) wake = next_touch;
        if (end < wake) wake = end;
        sleep_until(wake);
    }
    verify();
    return any_failure ? 1 : 0;
}
