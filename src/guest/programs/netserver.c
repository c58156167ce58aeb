/*
 * netserver: TCP workloads for migration experiments, all in one poll() loop so a single
 * process serves many clients and its state is easy to reason about across a migration.
 *
 *   --echo PORT     echoes every byte back
 *   --stream PORT   on connect, sends an endless byte stream; byte n of a connection is
 *                   (n % 251), so a client can check that nothing was lost or reordered
 *                   (251 is prime, so the pattern never lines up with buffer sizes)
 *   --sink PORT     reads and discards; when the peer closes, prints
 *                   "netserver: sink bytes=N seconds=S rate=R" (R in bytes/s)
 *   --udp-echo PORT sends every datagram back to its sender (the blackout probe's echo)
 *   --stream-interval-ms MS
 *                   paces every stream: one write of at most --stream-chunk bytes (default
 *                   512) every MS ms instead of as fast as TCP takes it, so a probe's stream
 *                   shows stalls without taking the link or the guest's CPU from a migration
 *
 * stdout (line-buffered): "netserver: ready echo=P stream=P sink=P udp-echo=P" (configured modes only)
 * once listening; then one line per finished stream or sink connection.
 * Exit codes: 0 on SIGTERM/SIGINT, 1 on a runtime error, 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum kind { ECHO, STREAM, SINK, NKINDS };
#define UDP_SLOT (-1 - NKINDS)
static const char *const kind_name[NKINDS] = { "echo", "stream", "sink" };

#define BUF_SIZE 65536
#define PATTERN_MOD 251
/* Large enough for big writes, and a whole number of periods so any offset can start a write. */
#define PATTERN_SIZE (PATTERN_MOD * 256)

struct client {
	int fd;
	enum kind kind;
	uint64_t bytes;
	double start;
	/* echo: bytes read but not yet written back */
	size_t len, off;
	unsigned char *buf;
};

static volatile sig_atomic_t stop;
static unsigned char pattern[PATTERN_SIZE + PATTERN_MOD];

static void on_signal(int sig) { (void)sig; stop = 1; }

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void)
{
	fprintf(stderr, "usage: netserver [--echo PORT] [--stream PORT] [--sink PORT] [--udp-echo PORT]\n"
	                "                 [--stream-interval-ms MS] [--stream-chunk BYTES] [--max-clients N]\n");
	exit(2);
}

static int parse_port(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == 0 || *end != 0 || v < 1 || v > 65535) usage();
	return (int)v;
}

static int parse_int(const char *s, long lo, long hi)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == 0 || *end != 0 || v < lo || v > hi) usage();
	return (int)v;
}

static int udp_on(int port)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) { perror("netserver: socket"); exit(1); }
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY) };
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		fprintf(stderr, "netserver: udp port %d: %s\n", port, strerror(errno));
		exit(1);
	}
	return fd;
}

/* Answers every queued datagram at once: after a stall the probe's backlog goes back in one
 * poll round, so the first reply after a blackout is not delayed by one round per datagram. */
static void udp_echo(int fd, unsigned char *buf)
{
	for (;;) {
		struct sockaddr_in from;
		socklen_t len = sizeof from;
		ssize_t n = recvfrom(fd, buf, BUF_SIZE, 0, (struct sockaddr *)&from, &len);
		if (n < 0) return;
		sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, len);
	}
}

static int listen_on(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) { perror("netserver: socket"); exit(1); }
	int one = 1;
	/* A restarted (or migrated-then-restarted) server must not wait out TIME_WAIT. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY) };
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 128) < 0) {
		fprintf(stderr, "netserver: port %d: %s\n", port, strerror(errno));
		exit(1);
	}
	return fd;
}

static void finish(struct client *c)
{
	if (c->kind == SINK) {
		double secs = now() - c->start;
		printf("netserver: sink bytes=%llu seconds=%.3f rate=%.0f\n", (unsigned long long)c->bytes, secs,
		       secs > 0 ? (double)c->bytes / secs : 0.0);
	} else if (c->kind == STREAM) {
		printf("netserver: stream bytes=%llu\n", (unsigned long long)c->bytes);
	}
	close(c->fd);
	free(c->buf);
	c->fd = -1;
	c->buf = NULL;
}

/* Returns 0 when the connection is over. */
static int on_readable(struct client *c, unsigned char *scratch)
{
	/* Echo data not yet sent back must not be overwritten; its write reports a dead peer. */
	if (c->kind == ECHO && c->len) return 1;
	unsigned char *dst = c->kind == ECHO ? c->buf : scratch;
	ssize_t n = read(c->fd, dst, BUF_SIZE);
	if (n == 0) return 0;
	if (n < 0) return errno == EAGAIN || errno == EINTR;
	if (c->kind == ECHO) {
		c->len = (size_t)n;
		c->off = 0;
	} else if (c->kind == SINK) {
		c->bytes += (uint64_t)n;
	}
	/* stream: whatever the client sends is ignored; reading it only detects the close */
	return 1;
}

static int on_writable(struct client *c, size_t chunk)
{
	ssize_t n;
	if (c->kind == ECHO) {
		n = write(c->fd, c->buf + c->off, c->len - c->off);
	} else {
		size_t start = (size_t)(c->bytes % PATTERN_MOD);
		n = write(c->fd, pattern + start, chunk);
	}
	if (n < 0) return errno == EAGAIN || errno == EINTR;
	if (c->kind == ECHO) {
		c->off += (size_t)n;
		if (c->off == c->len) c->len = c->off = 0;
	}
	c->bytes += (uint64_t)n;
	return 1;
}

int main(int argc, char **argv)
{
	int port[NKINDS] = { 0, 0, 0 };
	int max_clients = 256;
	int udp_port = 0, interval_ms = 0;
	size_t chunk = 512;
	for (int i = 1; i < argc; i++) {
		if (i + 1 >= argc) usage();
		if (!strcmp(argv[i], "--echo")) port[ECHO] = parse_port(argv[++i]);
		else if (!strcmp(argv[i], "--udp-echo")) udp_port = parse_port(argv[++i]);
		else if (!strcmp(argv[i], "--stream-interval-ms")) interval_ms = parse_int(argv[++i], 1, 60000);
		else if (!strcmp(argv[i], "--stream-chunk")) chunk = (size_t)parse_int(argv[++i], 1, PATTERN_SIZE);
		else if (!strcmp(argv[i], "--stream")) port[STREAM] = parse_port(argv[++i]);
		else if (!strcmp(argv[i], "--sink")) port[SINK] = parse_port(argv[++i]);
		else if (!strcmp(argv[i], "--max-clients")) {
			max_clients = atoi(argv[++i]);
			if (max_clients < 1 || max_clients > 100000) usage();
		} else usage();
	}
	if (!port[ECHO] && !port[STREAM] && !port[SINK] && !udp_port) usage();
	if (!interval_ms) chunk = PATTERN_SIZE;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = (unsigned char)(i % PATTERN_MOD);

	int lfd[NKINDS];
	for (int k = 0; k < NKINDS; k++) lfd[k] = port[k] ? listen_on(port[k]) : -1;

	printf("netserver: ready");
	int ufd = udp_port ? udp_on(udp_port) : -1;
	for (int k = 0; k < NKINDS; k++) if (port[k]) printf(" %s=%d", kind_name[k], port[k]);
	if (udp_port) printf(" udp-echo=%d", udp_port);
	printf("\n");

	struct client *clients = calloc((size_t)max_clients, sizeof *clients);
	struct pollfd *pfd = calloc((size_t)max_clients + NKINDS + 1, sizeof *pfd);
	/* pfd index -> client index, rebuilt each round; UDP_SLOT marks the UDP echo */
	int *who = calloc((size_t)max_clients + NKINDS + 1, sizeof *who);
	unsigned char *scratch = malloc(BUF_SIZE);
	if (!clients || !pfd || !who || !scratch) { fprintf(stderr, "netserver: out of memory\n"); return 1; }
	int nclients = 0;
	for (int i = 0; i < max_clients; i++) clients[i].fd = -1;

	/* Paced streams write when a tick is due; ticks missed while the guest was paused are
	 * skipped, not replayed as a burst. */
	double next_tick = now();
	while (!stop) {
		int n = 0;
		double t = now();
		int tick = interval_ms && t >= next_tick;
		if (tick) {
			next_tick += interval_ms / 1000.0;
			if (next_tick < t) next_tick = t + interval_ms / 1000.0;
		}
		if (ufd >= 0) {
			pfd[n] = (struct pollfd){ .fd = ufd, .events = POLLIN };
			who[n++] = UDP_SLOT;
		}
		for (int k = 0; k < NKINDS; k++) {
			if (lfd[k] < 0) continue;
			/* When full, stop accepting: the kernel's backlog holds newcomers until a slot frees. */
			pfd[n] = (struct pollfd){ .fd = nclients < max_clients ? lfd[k] : -1, .events = POLLIN };
			who[n++] = -1 - k;
		}
		for (int i = 0; i < max_clients; i++) {
			struct client *c = &clients[i];
			if (c->fd < 0) continue;
			short ev = POLLIN;
			/* An echo client with unsent data is not read further: back-pressure instead of buffering. */
			if (c->kind == ECHO && c->len) ev = POLLOUT;
			if (c->kind == STREAM) ev = interval_ms && !tick ? POLLIN : POLLIN | POLLOUT;
			pfd[n] = (struct pollfd){ .fd = c->fd, .events = ev };
			who[n++] = i;
		}
		int timeout = -1;
		if (interval_ms) {
			double wait = (next_tick - now()) * 1000.0;
			timeout = tick ? 0 : wait < 0 ? 0 : (int)wait + 1;
		}
		if (poll(pfd, (nfds_t)n, timeout) < 0) {
			if (errno == EINTR) continue;
			perror("netserver: poll");
			return 1;
		}
		for (int j = 0; j < n; j++) {
			short re = pfd[j].revents;
			if (!re) continue;
			if (who[j] == UDP_SLOT) {
				udp_echo(ufd, scratch);
				continue;
			}
			if (who[j] < 0) {
				int k = -1 - who[j];
				int cfd = accept4(lfd[k], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (cfd < 0) continue;
				int slot = 0;
				while (slot < max_clients && clients[slot].fd >= 0) slot++;
				if (slot == max_clients) { close(cfd); continue; }
				if (k == ECHO || interval_ms) {
					int one = 1;
					setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
				}
				struct client *c = &clients[slot];
				*c = (struct client){ .fd = cfd, .kind = (enum kind)k, .start = now() };
				if (k == ECHO && !(c->buf = malloc(BUF_SIZE))) { close(cfd); c->fd = -1; continue; }
				nclients++;
				continue;
			}
			struct client *c = &clients[who[j]];
			int alive = 1;
			if (re & POLLOUT) alive = on_writable(c, chunk);
			if (alive && (re & (POLLIN | POLLHUP | POLLERR))) alive = on_readable(c, scratch);
			if (!alive) {
				finish(c);
				nclients--;
			}
		}
	}
	for (int i = 0; i < max_clients; i++) if (clients[i].fd >= 0) finish(&clients[i]);
	return 0;
}
