/* netem.c: the emulated wide-area link of barge's WAN bench (scripts/wan/).
 *
 * This kernel has no sch_netem, so `tc qdisc ... netem` cannot add delay, rate or loss.
 * This program stands in for `netem delay D rate R loss P limit L` on both directions of
 * a link: it runs in a middle network namespace holding two veth ends and moves every
 * Ethernet frame from one to the other through a queue per direction.
 *
 *   netem bridge IF_A IF_B ONE_WAY_US RATE_BPS LOSS_PPM LIMIT
 *       A frame arriving at time t (of L bytes) is dropped with probability LOSS_PPM/1e6,
 *       or when LIMIT frames are already queued in its direction; else it leaves at
 *       max(t + ONE_WAY_US, previous departure) + L*8/RATE_BPS (RATE_BPS 0: no limit),
 *       in arrival order. SIGUSR1 prints counters to stderr; SIGTERM ends.
 *   netem offload DEV
 *       Turns off segmentation/receive offloads and tx checksumming on DEV (there is no
 *       ethtool binary here), so frames are real <= 1514-byte frames with checksums.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/ethtool.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME_MAX 2048
#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

typedef struct {
  uint64_t due_ns;
  uint16_t len;
  unsigned char bytes[FRAME_MAX];
} frame;

/* One direction of the link: frames read from `from` wait here, then go out on `to`. */
typedef struct {
  int from, to;
  frame *q;
  uint32_t cap, first, n;
  uint64_t last_due;
  uint64_t got, lost, full, sent;
  const char *name;
} lane;

static uint64_t one_way_ns, rate_bps, loss_ppm;
static volatile sig_atomic_t stop, report;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static void on_signal(int s) {
  if (s == SIGUSR1) report = 1;
  else stop = 1;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: uniform in [0, 1e6) for the loss draw. */
static uint64_t draw_ppm(void) {
  rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
  return (rng * 2685821657736338717ull) % 1000000;
}

static int open_port(const char *dev) {
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
  if (fd < 0) { perror("socket(AF_PACKET)"); exit(1); }
  int one = 1;
  setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
  int big = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
  struct sockaddr_ll at = {0};
  at.sll_family = AF_PACKET;
  at.sll_protocol = htons(ETH_P_ALL);
  at.sll_ifindex = (int)if_nametoindex(dev);
  if (!at.sll_ifindex || bind(fd, (struct sockaddr *)&at, sizeof at) < 0) {
    fprintf(stderr, "netem: cannot bind to %s: %s\n", dev, strerror(errno));
    exit(1);
  }
  return fd;
}

/* Reads every waiting frame of a lane and queues (or drops) it. */
static void take_in(lane *l) {
  for (;;) {
    frame *f = &l->q[(l->first + l->n) % l->cap];
    frame spare;
    if (l->n == l->cap) f = &spare; /* full: read it anyway, then drop */
    ssize_t len = recv(l->from, f->bytes, FRAME_MAX, 0);
    if (len <= 0) return;
    l->got++;
    if (f == &spare) { l->full++; continue; }
    if (loss_ppm && draw_ppm() < loss_ppm) { l->lost++; continue; }
    uint64_t due = now_ns() + one_way_ns;
    if (due < l->last_due) due = l->last_due;
    if (rate_bps) due += (uint64_t)len * 8 * 1000000000ull / rate_bps;
    f->due_ns = l->last_due = due;
    f->len = (uint16_t)len;
    l->n++;
  }
}

/* Sends the frames that are due; returns ns until the next one (or -1: none queued). */
static int64_t send_due(lane *l) {
  uint64_t t = now_ns();
  while (l->n) {
    frame *f = &l->q[l->first];
    if (f->due_ns > t) return (int64_t)(f->due_ns - t);
    if (send(l->to, f->bytes, f->len, 0) == f->len) l->sent++;
    l->first = (l->first + 1) % l->cap;
    l->n--;
  }
  return -1;
}

static void print_counters(const lane *ls) {
  for (int i = 0; i < 2; i++)
    fprintf(stderr, "netem %s: got=%llu lost=%llu full=%llu sent=%llu\n", ls[i].name,
            (unsigned long long)ls[i].got, (unsigned long long)ls[i].lost,
            (unsigned long long)ls[i].full, (unsigned long long)ls[i].sent);
}

static int bridge(char **argv) {
  one_way_ns = strtoull(argv[2], 0, 10) * 1000ull;
  rate_bps = strtoull(argv[3], 0, 10);
  loss_ppm = strtoull(argv[4], 0, 10);
  uint32_t limit = (uint32_t)strtoul(argv[5], 0, 10);
  if (limit < 1) limit = 1;
  int a = open_port(argv[0]), b = open_port(argv[1]);
  lane ls[2] = {{.from = a, .to = b, .name = "a>b"}, {.from = b, .to = a, .name = "b>a"}};
  for (int i = 0; i < 2; i++) {
    ls[i].cap = limit;
    ls[i].q = calloc(limit, sizeof(frame));
    if (!ls[i].q) { perror("calloc"); return 1; }
  }
  rng ^= (uint64_t)getpid() << 17 ^ now_ns();
  signal(SIGTERM, on_signal); signal(SIGINT, on_signal); signal(SIGUSR1, on_signal);
  while (!stop) {
    int64_t wait = -1;
    for (int i = 0; i < 2; i++) {
      int64_t w = send_due(&ls[i]);
      if (w >= 0 && (wait < 0 || w < wait)) wait = w;
    }
    struct pollfd p[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
    struct timespec ts = {0, 0}, *tp = NULL;
    if (wait >= 0) { ts.tv_sec = wait / 1000000000; ts.tv_nsec = wait % 1000000000; tp = &ts; }
    if (ppoll(p, 2, tp, NULL) < 0 && errno != EINTR) { perror("ppoll"); return 1; }
    if (p[0].revents & POLLIN) take_in(&ls[0]);
    if (p[1].revents & POLLIN) take_in(&ls[1]);
    if (report) { report = 0; print_counters(ls); }
  }
  print_counters(ls);
  return 0;
}

/* One legacy ethtool request on DEV. */
static int ethtool_op(int fd, const char *dev, uint32_t cmd, uint32_t *value) {
  struct ethtool_value ev = {.cmd = cmd, .data = *value};
  struct ifreq req;
  memset(&req, 0, sizeof req);
  snprintf(req.ifr_name, sizeof req.ifr_name, "%s", dev);
  req.ifr_data = (char *)&ev;
  int r = ioctl(fd, SIOCETHTOOL, &req);
  *value = ev.data;
  return r;
}

static int offload_off(const char *dev) {
  static const struct { const char *what; uint32_t set, get; } knobs[] = {
      {"tso", ETHTOOL_STSO, ETHTOOL_GTSO},       {"gso", ETHTOOL_SGSO, ETHTOOL_GGSO},
      {"gro", ETHTOOL_SGRO, ETHTOOL_GGRO},       {"sg", ETHTOOL_SSG, ETHTOOL_GSG},
      {"tx-csum", ETHTOOL_STXCSUM, ETHTOOL_GTXCSUM}};
  int fd = socket(AF_INET, SOCK_DGRAM, 0), still_on = 0;
  for (size_t i = 0; i < sizeof knobs / sizeof *knobs; i++) {
    uint32_t v = 0;
    ethtool_op(fd, dev, knobs[i].set, &v);
    v = 0;
    if (ethtool_op(fd, dev, knobs[i].get, &v) < 0 || v) {
      fprintf(stderr, "netem: %s still on for %s\n", knobs[i].what, dev);
      still_on = 1;
    }
  }
  close(fd);
  return still_on;
}

int main(int argc, char **argv) {
  if (argc == 8 && !strcmp(argv[1], "bridge")) return bridge(argv + 2);
  if (argc == 3 && !strcmp(argv[1], "offload")) return offload_off(argv[2]);
  fprintf(stderr, "usage: netem bridge IF_A IF_B ONE_WAY_US RATE_BPS LOSS_PPM LIMIT\n"
                  "       netem offload DEV\n");
  return 2;
}
