/*
 * gameserver: the UDP "game server" of migration experiments (the Quake 3 server of Clark et
 * al., NSDI 2005): every registered client gets one numbered packet per tick, so a client sees
 * every gap a migration causes, both as lost sequence numbers and as a late arrival.
 *
 * A client registers by sending any datagram to the server port; a datagram starting with
 * "bye" unregisters it. Packet layout (big-endian), padded with zeros to --size bytes:
 *   0  "FGS1"     magic
 *   4  u32 seq    per-client packet number, 1, 2, 3, ... (a gap is a lost packet)
 *   8  u32 tick   server tick index since start; a jump > 1 means the server itself stalled
 *  12  u64 mono   server CLOCK_MONOTONIC in nanoseconds when the packet was sent
 *
 * Options: --port P (27960)  --interval-ms N (20)  --duration S (0: forever)
 *          --count N (packets per client, then it is dropped; 0: unlimited)
 *          --size N (64, at least 20)  --max-clients N (64)
 * stdout (line-buffered): "gameserver: ready port=P interval_ms=N", then
 * "gameserver: client ADDR:PORT registered" / "... done sent=N" / "... left sent=N".
 * Exit codes: 0 after --duration or on SIGTERM/SIGINT, 1 on a runtime error, 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEADER_SIZE 20
#define MAX_SIZE 1400

struct client {
	int used;
	struct sockaddr_in addr;
	uint32_t seq;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig) { (void)sig; stop = 1; }

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void usage(void)
{
	fprintf(stderr, "usage: gameserver [--port P] [--interval-ms N] [--duration S] [--count N] [--size N] [--max-clients N]\n");
	exit(2);
}

static long parse_num(const char *s, long lo, long hi)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == 0 || *end != 0 || v < lo || v > hi) usage();
	return v;
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16); p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static const char *fmt_addr(const struct sockaddr_in *a, char *buf, size_t len)
{
	char ip[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
	snprintf(buf, len, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
	return buf;
}

static int same(const struct sockaddr_in *a, const struct sockaddr_in *b)
{
	return a->sin_addr.s_addr == b->sin_addr.s_addr && a->sin_port == b->sin_port;
}

int main(int argc, char **argv)
{
	int port = 27960, size = 64, max_clients = 64;
	long interval_ms = 20, duration_s = 0, count = 0;
	for (int i = 1; i < argc; i++) {
		if (i + 1 >= argc) usage();
		const char *o = argv[i], *v = argv[++i];
		if (!strcmp(o, "--port")) port = (int)parse_num(v, 1, 65535);
		else if (!strcmp(o, "--interval-ms")) interval_ms = parse_num(v, 1, 60000);
		else if (!strcmp(o, "--duration")) duration_s = parse_num(v, 0, 100000000);
		else if (!strcmp(o, "--count")) count = parse_num(v, 0, 0x7fffffff);
		else if (!strcmp(o, "--size")) size = (int)parse_num(v, HEADER_SIZE, MAX_SIZE);
		else if (!strcmp(o, "--max-clients")) max_clients = (int)parse_num(v, 1, 100000);
		else usage();
	}

	setvbuf(stdout, NULL, _IOLBF, 0);
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) { perror("gameserver: socket"); return 1; }
	struct sockaddr_in la = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY) };
	if (bind(fd, (struct sockaddr *)&la, sizeof la) < 0) {
		fprintf(stderr, "gameserver: port %d: %s\n", port, strerror(errno));
		return 1;
	}
	struct client *clients = calloc((size_t)max_clients, sizeof *clients);
	if (!clients) { fprintf(stderr, "gameserver: out of memory\n"); return 1; }
	printf("gameserver: ready port=%d interval_ms=%ld\n", port, interval_ms);

	const int64_t interval = interval_ms * 1000000;
	const int64_t start = now_ns();
	const int64_t end = duration_s ? start + duration_s * 1000000000LL : INT64_MAX;
	int64_t next = start + interval;
	unsigned char pkt[MAX_SIZE] = { 'F', 'G', 'S', '1' };
	unsigned char in[512];
	char abuf[64];

	while (!stop) {
		int64_t t = now_ns();
		if (t >= end) break;
		if (t >= next) {
			uint32_t tick = (uint32_t)((t - start) / interval);
			int64_t mono = now_ns();
			put32(pkt + 8, tick);
			put32(pkt + 12, (uint32_t)((uint64_t)mono >> 32));
			put32(pkt + 16, (uint32_t)mono);
			for (int i = 0; i < max_clients; i++) {
				struct client *c = &clients[i];
				if (!c->used) continue;
				put32(pkt + 4, ++c->seq);
				/* UDP: a full socket buffer loses the packet, and the client sees the gap. */
				sendto(fd, pkt, (size_t)size, 0, (struct sockaddr *)&c->addr, sizeof c->addr);
				if (count && c->seq >= (uint32_t)count) {
					printf("gameserver: client %s done sent=%u\n", fmt_addr(&c->addr, abuf, sizeof abuf), c->seq);
					c->used = 0;
				}
			}
			/* After a stall (e.g. the VM paused for migration) missed ticks are skipped, not
			 * sent in a burst: a game server simulates the present. The tick field shows it. */
			next += interval;
			if (next <= t) next = t - (t - start) % interval + interval;
		}
		int64_t wait = next < end ? next - now_ns() : end - now_ns();
		if (wait < 0) wait = 0;
		struct timespec ts = { .tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000 };
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = ppoll(&p, 1, &ts, NULL);
		if (r < 0 && errno != EINTR) { perror("gameserver: ppoll"); return 1; }
		if (r <= 0 || !(p.revents & POLLIN)) continue;
		for (;;) {
			struct sockaddr_in from;
			socklen_t flen = sizeof from;
			ssize_t n = recvfrom(fd, in, sizeof in, 0, (struct sockaddr *)&from, &flen);
			if (n < 0) break;
			int slot = -1, free_slot = -1;
			for (int i = 0; i < max_clients; i++) {
				if (clients[i].used && same(&clients[i].addr, &from)) slot = i;
				else if (!clients[i].used && free_slot < 0) free_slot = i;
			}
			if (n >= 3 && !memcmp(in, "bye", 3)) {
				if (slot >= 0) {
					printf("gameserver: client %s left sent=%u\n", fmt_addr(&from, abuf, sizeof abuf), clients[slot].seq);
					clients[slot].used = 0;
				}
				continue;
			}
			/* Re-registering (a client retrying until its first packet) changes nothing. */
			if (slot >= 0 || free_slot < 0) continue;
			clients[free_slot] = (struct client){ .used = 1, .addr = from, .seq = 0 };
			printf("gameserver: client %s registered\n", fmt_addr(&from, abuf, sizeof abuf));
		}
	}
	return 0;
}
