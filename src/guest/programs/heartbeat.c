/*
 * heartbeat: prints one line per interval so a migration's effect on the guest is visible
 * from outside it.
 *
 *   heartbeat [-i MS] [-n COUNT]
 *
 * Output: "heartbeat <n> <monotonic s.us> <realtime s.us>", n counting from 1.
 * Gaps between consecutive monotonic stamps show how long the guest was stopped (if the
 * hypervisor lets guest time run on) or that it was not (if guest time is frozen); the
 * realtime stamp lets a test line the guest up against host logs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(void) {
    fprintf(stderr, "usage: heartbeat [-i INTERVAL_MS] [-n COUNT]\n");
    exit(2);
}

/* Strict parsing: a typo in a test script should fail loudly, not run with a default. */
static long parse_long(const char *s, long min) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min) usage();
    return v;
}

static long long ns_of(const struct timespec *t) {
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

static struct timespec ts_of(long long ns) {
    struct timespec t = { (time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL) };
    return t;
}

int main(int argc, char **argv) {
    long interval_ms = 1000;
    long count = 0; /* 0 = forever */
    int opt;
    while ((opt = getopt(argc, argv, "i:n:h")) != -1) {
        switch (opt) {
        case 'i': interval_ms = parse_long(optarg, 1); break;
        case 'n': count = parse_long(optarg, 0); break;
        default: usage();
        }
    }
    if (optind != argc) usage();

    /* Line buffering: the reader is a serial console or a pipe and wants each beat as it happens. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    const long long interval_ns = (long long)interval_ms * 1000000LL;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long deadline = ns_of(&now);

    for (long n = 1; count == 0 || n <= count; n++) {
        struct timespec mono, real;
        clock_gettime(CLOCK_MONOTONIC, &mono);
        clock_gettime(CLOCK_REALTIME, &real);
        printf("heartbeat %ld %lld.%06ld %lld.%06ld\n", n,
               (long long)mono.tv_sec, mono.tv_nsec / 1000,
               (long long)real.tv_sec, real.tv_nsec / 1000);
        if (count != 0 && n == count) break;

        /* Absolute deadlines keep the period from drifting by the cost of each loop. */
        deadline += interval_ns;
        if (deadline < ns_of(&mono)) {
            /* We were stopped for longer than an interval (e.g. across a migration). Skip the missed
             * beats rather than firing them in a burst, so the gap stays visible in the output. */
            deadline = ns_of(&mono) + interval_ns;
        }
        struct timespec until = ts_of(deadline);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
        }
    }
    return 0;
}
