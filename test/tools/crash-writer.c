/*
 * crash-writer: a real initiator (libiscsi, async API) that writes self-describing 4 KiB grains
 * with several commands in flight, and logs every write and SYNCHRONIZE CACHE it makes, so that
 * test/crash/harness.mjs can kill the target at any moment and then tell which content each grain
 * may hold after the restart. It also dumps a whole LUN for that check.
 *
 *   crash-writer write [-i INITIATOR] [-w ID] [-b BASE] [-s SEED] [-q DEPTH] [-t SECONDS]
 *                      [-y MIN,MAX] URL FIRST_LBA BLOCKS
 *   crash-writer read [-i INITIATOR] URL OUTFILE
 *
 * write: writes grains of 4 KiB at random grain-aligned LBAs of [FIRST_LBA, FIRST_LBA+BLOCKS)
 * (both multiples of 4096 / block size), DEPTH commands in flight (default 16), until the
 * connection drops or SECONDS have passed (default 60). Each command is WRITE(16) or WRITE(10) of
 * one grain, or sometimes of 4..16 consecutive grains (16..64 KiB); some carry FUA. Versions are
 * BASE+1, BASE+2, ...: one per command, given to each grain of it. No two commands in flight
 * overlap, so the versions of a grain are acknowledged in the order they were issued. After every
 * MIN..MAX acknowledgements (default 8,96) it sends SYNCHRONIZE CACHE(10) or (16) over the whole
 * LUN, usually while writes keep flowing, sometimes (1 in 4) alone: after draining the writes,
 * and holding new ones until it returns.
 *
 * Grain layout (big-endian), SANMUX crash pattern:
 *   0  magic "SMXGRAIN"     8  first LBA of the grain (u64)   16 version (u64)
 *   24 writer id (u32)      28 flags (u32: 1 = FUA, 2 = part of a multi-grain write)
 *   32 .. 4091 fill derived from (lba, version): xorshift32 output, or for 1 in 3 versions a
 *      repeated 16-byte sequence (compressible)
 *   4092 CRC-32 (IEEE, as zlib) of bytes 0..4091
 *
 * stdout, one event per line, line-buffered (so every line is in the pipe before the next
 * command goes out):
 *   R BLOCK_SIZE      logged in, about to write
 *   I LBA VERSION     about to issue a write of the grain at LBA (printed before the command)
 *   A LBA VERSION     that write returned GOOD
 *   F LBA VERSION     that write, sent with FUA, returned GOOD (durable on its own)
 *   E LBA VERSION ST KEY ASC  that write returned SCSI status ST from the target, with the sense
 *                     key and ASC/ASCQ (hex; 0 without sense data): its outcome is unknown
 *   Y N               about to issue SYNCHRONIZE CACHE number N: it covers every A line above it
 *   S N               SYNCHRONIZE CACHE number N returned GOOD
 *   X N ST KEY ASC    SYNCHRONIZE CACHE number N returned SCSI status ST, sense as for E
 *   D                 SECONDS passed and all commands completed
 * Commands cut off by a dropped connection print nothing (their outcome is unknown).
 *
 * read: reads the whole LUN with READ(16), 1 MiB at a time, into OUTFILE.
 *
 * Exit: 0 done; 1 login, capacity or transport failure before writing started (or in read);
 * 2 usage; 3 the connection dropped while writing (expected when the target is killed).
 */
#include <errno.h>
#include <inttypes.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GRAIN 4096
#define MAX_GRAINS_PER_WRITE 16
#define MAX_DEPTH 64

#define USAGE                                                                               \
  "usage: %s write [-i INITIATOR] [-w ID] [-b BASE] [-s SEED] [-q DEPTH] [-t SECONDS]\n"   \
  "                [-y MIN,MAX] URL FIRST_LBA BLOCKS\n"                                    \
  "       %s read [-i INITIATOR] URL OUTFILE\n"

/* ---- CRC-32 (IEEE 802.3, reflected, as zlib's crc32) ---- */
static uint32_t crc_table[256];

static void crc_init(void) {
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    crc_table[n] = c;
  }
}

static uint32_t crc32_ieee(const unsigned char *p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

/* ---- PRNGs ---- */
static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t rng_state;
static uint64_t rnd(uint64_t n) { return splitmix64(&rng_state) % n; }

static void put64(unsigned char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}
static void put32(unsigned char *p, uint32_t v) {
  for (int i = 3; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}

/* Fill one grain with the pattern for (lba, version). */
static void make_grain(unsigned char *g, uint64_t lba, uint64_t version, uint32_t writer,
                       uint32_t flags) {
  memcpy(g, "SMXGRAIN", 8);
  put64(g + 8, lba);
  put64(g + 16, version);
  put32(g + 24, writer);
  put32(g + 28, flags);
  uint64_t seed = lba * 0x9e3779b97f4a7c15ull ^ version;
  uint32_t x = (uint32_t)(splitmix64(&seed) | 1);
  if (version % 3 == 0) {
    unsigned char unit[16];
    for (int i = 0; i < 16; i++) unit[i] = (unsigned char)(x >> (8 * (i & 3))) ^ (unsigned char)i;
    for (int i = 32; i < GRAIN - 4; i++) g[i] = unit[i & 15];
  } else {
    for (int i = 32; i < GRAIN - 4; i += 4) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      put32(g + i, x);
    }
  }
  put32(g + GRAIN - 4, crc32_ieee(g, GRAIN - 4));
}

/* ---- write mode ---- */
struct slot {
  int busy;
  uint64_t lba; /* first LBA */
  uint32_t grains;
  uint64_t version;
  int fua;
  unsigned char *buf;
};

struct writer {
  struct iscsi_context *iscsi;
  int lun;
  uint32_t block_size;
  uint32_t blocks_per_grain;
  uint64_t first_lba;
  uint64_t grains;      /* in the region */
  unsigned char *busy;  /* per grain of the region: a command in flight covers it */
  struct slot slots[MAX_DEPTH];
  int depth;
  int inflight;
  uint32_t id;
  uint64_t version;
  int acks_until_sync;
  int sync_min, sync_max;
  int sync_inflight;
  int sync_quiesce;     /* the next SYNCHRONIZE CACHE goes alone: drain writes, hold them */
  int sync_alone;       /* a SYNCHRONIZE CACHE sent alone is in flight: no writes until it ends */
  int syncs_issued;
  int transport_lost;
};

/* One writer per process; libiscsi's callbacks reach it through this. */
static struct writer the_writer;

static int transport_status(int status) {
  return status == SCSI_STATUS_CANCELLED || status == SCSI_STATUS_ERROR ||
         status == SCSI_STATUS_TIMEOUT;
}

static void write_done(struct iscsi_context *iscsi, int status, void *command_data, void *private) {
  (void)iscsi;
  struct slot *s = private;
  struct writer *w = &the_writer;
  struct scsi_task *task = command_data;
  if (transport_status(status)) {
    w->transport_lost = 1;
  } else {
    for (uint32_t i = 0; i < s->grains; i++) {
      uint64_t lba = s->lba + (uint64_t)i * w->blocks_per_grain;
      if (status == SCSI_STATUS_GOOD) {
        printf("%c %" PRIu64 " %" PRIu64 "\n", s->fua ? 'F' : 'A', lba, s->version);
      } else {
        printf("E %" PRIu64 " %" PRIu64 " %x %x %04x\n", lba, s->version, (unsigned)status,
               task ? (unsigned)task->sense.key : 0u, task ? (unsigned)task->sense.ascq : 0u);
      }
    }
    if (status == SCSI_STATUS_GOOD) w->acks_until_sync--;
  }
  uint64_t g0 = (s->lba - w->first_lba) / w->blocks_per_grain;
  for (uint32_t i = 0; i < s->grains; i++) w->busy[g0 + i] = 0;
  s->busy = 0;
  w->inflight--;
  if (task) scsi_free_scsi_task(task);
}

static void sync_done(struct iscsi_context *iscsi, int status, void *command_data, void *private) {
  (void)iscsi;
  struct writer *w = &the_writer;
  int n = (int)(intptr_t)private;
  if (transport_status(status)) {
    w->transport_lost = 1;
  } else if (status == SCSI_STATUS_GOOD) {
    printf("S %d\n", n);
  } else {
    struct scsi_task *task = command_data;
    printf("X %d %x %x %04x\n", n, (unsigned)status, task ? (unsigned)task->sense.key : 0u,
           task ? (unsigned)task->sense.ascq : 0u);
  }
  w->sync_inflight = 0;
  w->sync_alone = 0;
  if (command_data) scsi_free_scsi_task(command_data);
}

static void plan_next_sync(struct writer *w) {
  w->acks_until_sync = w->sync_min + (int)rnd((uint64_t)(w->sync_max - w->sync_min + 1));
  w->sync_quiesce = rnd(4) == 0;
}

static int issue_sync(struct writer *w) {
  int n = ++w->syncs_issued;
  printf("Y %d\n", n);
  struct scsi_task *t;
  if (rnd(2) == 0) {
    t = iscsi_synchronizecache10_task(w->iscsi, w->lun, 0, 0, 0, 0, sync_done, (void *)(intptr_t)n);
  } else {
    t = iscsi_synchronizecache16_task(w->iscsi, w->lun, 0, 0, 0, 0, sync_done, (void *)(intptr_t)n);
  }
  if (t == NULL) return -1;
  w->sync_inflight = 1;
  w->sync_alone = w->sync_quiesce;
  plan_next_sync(w);
  return 0;
}

/* Issue one write if a free slot and a free range are found. */
static int issue_write(struct writer *w) {
  struct slot *s = NULL;
  for (int i = 0; i < w->depth; i++) {
    if (!w->slots[i].busy) {
      s = &w->slots[i];
      break;
    }
  }
  if (s == NULL) return 0;
  uint32_t n = 1;
  if (rnd(8) == 0) n = 4 + (uint32_t)rnd(MAX_GRAINS_PER_WRITE - 4 + 1);
  if (n > w->grains) n = (uint32_t)w->grains;
  uint64_t g0 = 0;
  int found = 0;
  for (int attempt = 0; attempt < 16 && !found; attempt++) {
    /* half the writes go to the first eighth of the region, so that grains get rewritten */
    uint64_t span = rnd(2) == 0 && w->grains >= 8 ? w->grains / 8 : w->grains;
    if (span < n) span = n;
    g0 = rnd(span - n + 1);
    found = 1;
    for (uint32_t i = 0; i < n; i++) {
      if (w->busy[g0 + i]) {
        found = 0;
        break;
      }
    }
  }
  if (!found) return 0;
  s->busy = 1;
  s->grains = n;
  s->lba = w->first_lba + g0 * w->blocks_per_grain;
  s->version = ++w->version;
  s->fua = rnd(16) == 0;
  uint32_t flags = (s->fua ? 1u : 0u) | (n > 1 ? 2u : 0u);
  for (uint32_t i = 0; i < n; i++) {
    uint64_t lba = s->lba + (uint64_t)i * w->blocks_per_grain;
    w->busy[g0 + i] = 1;
    make_grain(s->buf + (size_t)i * GRAIN, lba, s->version, w->id, flags);
    printf("I %" PRIu64 " %" PRIu64 "\n", lba, s->version);
  }
  struct scsi_task *t;
  uint32_t len = n * GRAIN;
  if (rnd(2) == 0 && s->lba + n * w->blocks_per_grain <= 0xffffffffull) {
    t = iscsi_write10_task(w->iscsi, w->lun, (uint32_t)s->lba, s->buf, len, (int)w->block_size, 0,
                           0, s->fua, 0, 0, write_done, s);
  } else {
    t = iscsi_write16_task(w->iscsi, w->lun, s->lba, s->buf, len, (int)w->block_size, 0, 0,
                           s->fua, 0, 0, write_done, s);
  }
  if (t == NULL) return -1;
  w->inflight++;
  return 1;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct iscsi_context *login(const char *initiator, const char *url_text, int *lun) {
  struct iscsi_context *iscsi = iscsi_create_context(initiator);
  if (iscsi == NULL) {
    fprintf(stderr, "cannot create an iSCSI context\n");
    return NULL;
  }
  struct iscsi_url *url = iscsi_parse_full_url(iscsi, url_text);
  if (url == NULL) {
    fprintf(stderr, "bad url: %s\n", iscsi_get_error(iscsi));
    return NULL;
  }
  /* A dropped connection must end the run, not be papered over by a silent re-login. */
  iscsi_set_noautoreconnect(iscsi, 1);
  iscsi_set_reconnect_max_retries(iscsi, 0);
  iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
  iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
  iscsi_set_timeout(iscsi, 30);
  if (iscsi_full_connect_sync(iscsi, url->portal, url->lun) != 0) {
    fprintf(stderr, "login failed: %s\n", iscsi_get_error(iscsi));
    return NULL;
  }
  *lun = url->lun;
  iscsi_destroy_url(url);
  return iscsi;
}

static int block_size_of(struct iscsi_context *iscsi, int lun, uint64_t *blocks) {
  struct scsi_task *cap = iscsi_readcapacity16_sync(iscsi, lun);
  struct scsi_readcapacity16 *rc = cap ? scsi_datain_unmarshall(cap) : NULL;
  if (rc == NULL) {
    fprintf(stderr, "read capacity failed: %s\n", iscsi_get_error(iscsi));
    return -1;
  }
  int bs = (int)rc->block_length;
  if (blocks) *blocks = rc->returned_lba + 1;
  scsi_free_scsi_task(cap);
  return bs;
}

static int run_write(int argc, char **argv) {
  const char *initiator = "iqn.2026-11.io.sanmux:crash-writer";
  struct writer *w = &the_writer;
  uint64_t seed = 1;
  double seconds = 60;
  w->depth = 16;
  w->sync_min = 8;
  w->sync_max = 96;
  int opt;
  while ((opt = getopt(argc, argv, "i:w:b:s:q:t:y:")) != -1) {
    switch (opt) {
      case 'i': initiator = optarg; break;
      case 'w': w->id = (uint32_t)strtoul(optarg, NULL, 0); break;
      case 'b': w->version = strtoull(optarg, NULL, 0); break;
      case 's': seed = strtoull(optarg, NULL, 0); break;
      case 'q': w->depth = atoi(optarg); break;
      case 't': seconds = atof(optarg); break;
      case 'y':
        if (sscanf(optarg, "%d,%d", &w->sync_min, &w->sync_max) != 2) return 2;
        break;
      default: return 2;
    }
  }
  if (argc - optind != 3 || w->depth < 1 || w->depth > MAX_DEPTH || w->sync_min < 1 ||
      w->sync_max < w->sync_min) {
    return 2;
  }
  const char *url_text = argv[optind];
  uint64_t first_lba = strtoull(argv[optind + 1], NULL, 0);
  uint64_t blocks = strtoull(argv[optind + 2], NULL, 0);
  rng_state = seed ^ ((uint64_t)w->id << 48);

  w->iscsi = login(initiator, url_text, &w->lun);
  if (w->iscsi == NULL) return 1;
  uint64_t lun_blocks = 0;
  int bs = block_size_of(w->iscsi, w->lun, &lun_blocks);
  if (bs <= 0) return 1;
  if (GRAIN % bs != 0) {
    fprintf(stderr, "block size %d does not divide the grain\n", bs);
    return 2;
  }
  w->block_size = (uint32_t)bs;
  w->blocks_per_grain = GRAIN / (uint32_t)bs;
  if (first_lba % w->blocks_per_grain || blocks % w->blocks_per_grain || blocks == 0 ||
      first_lba + blocks > lun_blocks) {
    fprintf(stderr, "region %" PRIu64 "+%" PRIu64 " is not grain-aligned inside the LUN\n",
            first_lba, blocks);
    return 2;
  }
  w->first_lba = first_lba;
  w->grains = blocks / w->blocks_per_grain;
  w->busy = calloc(w->grains, 1);
  for (int i = 0; i < w->depth; i++) w->slots[i].buf = malloc(MAX_GRAINS_PER_WRITE * GRAIN);
  /* the first SYNCHRONIZE CACHE comes early, so that even a short run has one */
  w->acks_until_sync = 4 + (int)rnd(8);
  w->sync_quiesce = 0;

  printf("R %u\n", w->block_size);
  double deadline = now_s() + seconds;
  int finishing = 0;
  for (;;) {
    if (!finishing && now_s() >= deadline) finishing = 1;
    if (finishing && w->inflight == 0 && !w->sync_inflight) {
      printf("D\n");
      return 0;
    }
    if (!finishing && !w->sync_inflight && w->acks_until_sync <= 0 &&
        (!w->sync_quiesce || w->inflight == 0)) {
      if (issue_sync(w) != 0) {
        fprintf(stderr, "cannot queue SYNCHRONIZE CACHE: %s\n", iscsi_get_error(w->iscsi));
        return 3;
      }
    }
    int draining = (w->acks_until_sync <= 0 && w->sync_quiesce) || w->sync_alone;
    while (!finishing && !draining && w->inflight < w->depth) {
      int r = issue_write(w);
      if (r < 0) {
        fprintf(stderr, "cannot queue a write: %s\n", iscsi_get_error(w->iscsi));
        return 3;
      }
      if (r == 0) break;
    }
    struct pollfd pfd = {.fd = iscsi_get_fd(w->iscsi), .events = (short)iscsi_which_events(w->iscsi)};
    int pr = poll(&pfd, 1, 100);
    if (pr < 0 && errno != EINTR) {
      perror("poll");
      return 3;
    }
    if (iscsi_service(w->iscsi, pr > 0 ? pfd.revents : 0) < 0) {
      fprintf(stderr, "connection lost: %s\n", iscsi_get_error(w->iscsi));
      return 3;
    }
    if (w->transport_lost) {
      fprintf(stderr, "connection lost: %s\n", iscsi_get_error(w->iscsi));
      return 3;
    }
  }
}

/* ---- read mode ---- */
static int run_read(int argc, char **argv) {
  const char *initiator = "iqn.2026-11.io.sanmux:crash-writer";
  int opt;
  while ((opt = getopt(argc, argv, "i:")) != -1) {
    if (opt == 'i') {
      initiator = optarg;
    } else {
      return 2;
    }
  }
  if (argc - optind != 2) return 2;
  int lun;
  struct iscsi_context *iscsi = login(initiator, argv[optind], &lun);
  if (iscsi == NULL) return 1;
  uint64_t blocks;
  int bs = block_size_of(iscsi, lun, &blocks);
  if (bs <= 0) return 1;
  FILE *out = fopen(argv[optind + 1], "wb");
  if (out == NULL) {
    perror(argv[optind + 1]);
    return 1;
  }
  uint32_t step = (1u << 20) / (uint32_t)bs;
  for (uint64_t lba = 0; lba < blocks; lba += step) {
    uint32_t n = blocks - lba < step ? (uint32_t)(blocks - lba) : step;
    struct scsi_task *t = iscsi_read16_sync(iscsi, lun, lba, n * (uint32_t)bs, bs, 0, 0, 0, 0, 0);
    if (t == NULL || t->status != SCSI_STATUS_GOOD || t->datain.size != (int)(n * (uint32_t)bs)) {
      fprintf(stderr, "READ(16) at %" PRIu64 " failed: %s\n", lba,
              t == NULL ? iscsi_get_error(iscsi)
                        : (t->status == SCSI_STATUS_CHECK_CONDITION ? iscsi_get_error(iscsi)
                                                                     : "short or bad status"));
      return 1;
    }
    if (fwrite(t->datain.data, 1, (size_t)t->datain.size, out) != (size_t)t->datain.size) {
      perror("write");
      return 1;
    }
    scsi_free_scsi_task(t);
  }
  if (fclose(out) != 0) {
    perror("close");
    return 1;
  }
  iscsi_logout_sync(iscsi);
  iscsi_destroy_context(iscsi);
  return 0;
}

int main(int argc, char **argv) {
  crc_init();
  setvbuf(stdout, NULL, _IOLBF, 0);
  int rc = 2;
  if (argc >= 2 && strcmp(argv[1], "write") == 0) {
    rc = run_write(argc - 1, argv + 1);
  } else if (argc >= 2 && strcmp(argv[1], "read") == 0) {
    rc = run_read(argc - 1, argv + 1);
  }
  if (rc == 2) fprintf(stderr, USAGE, argv[0], argv[0]);
  fflush(stdout);
  return rc;
}
