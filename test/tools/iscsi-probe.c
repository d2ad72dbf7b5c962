/*
 * iscsi-probe: issue one SCSI command through libiscsi (a real initiator) and print the raw
 * outcome, for tests that need bytes or sense codes the stock iscsi-* tools do not show.
 *
 *   iscsi-probe [-i INITIATOR] URL vpd PAGE      prints the page's bytes as hex
 *   iscsi-probe [-i INITIATOR] URL write LBA     writes one block of 0x55 bytes with WRITE(10)
 *   iscsi-probe [-i INITIATOR] URL read LBA      reads one block with READ(10), prints hex
 *
 * Persistent reservations (SPC-4 6.15, 6.16; KEY in C syntax, e.g. 0x1234; TYPE 1..8):
 *   iscsi-probe [-i INITIATOR] URL prout-register KEY [aptpl]
 *                                  REGISTER AND IGNORE EXISTING KEY (KEY 0 unregisters)
 *   iscsi-probe [-i INITIATOR] URL prout-reserve KEY TYPE
 *   iscsi-probe [-i INITIATOR] URL prout-release KEY TYPE
 *   iscsi-probe [-i INITIATOR] URL prout-clear KEY
 *   iscsi-probe [-i INITIATOR] URL prin-keys          READ KEYS
 *   iscsi-probe [-i INITIATOR] URL prin-reservation   READ RESERVATION
 *   iscsi-probe [-i INITIATOR] URL prin-caps          REPORT CAPABILITIES (hex)
 *
 * Arbitration tests (one session, logged in through URL's LUN):
 *   iscsi-probe [-i INITIATOR] URL lunscan L1,L2,...
 *                                  for each LUN: READ(10) of LBA 0 and WRITE(10) of one 512-byte
 *                                  block of 0x55 at LBA 0, each printed as
 *                                  "lun=N read=OUTCOME" / "lun=N write=OUTCOME"
 *   iscsi-probe [-i INITIATOR] URL wait-tur
 *                                  prints "ready" once logged in (unit attentions of the login
 *                                  consumed), waits for a line on stdin, then sends TEST UNIT
 *                                  READY twice to URL's LUN, printing "tur1 OUTCOME" and
 *                                  "tur2 OUTCOME"
 *   iscsi-probe [-i INITIATOR] URL abort-queued N K M
 *                                  queues N READ(10)s of one block (LBA 0..N-1) at once, waits
 *                                  until all were sent and the first has completed (so that the
 *                                  target holds the others), then sends ABORT TASK (with the
 *                                  task's ITT and CmdSN) for the K-th (1-based; K > 1) and waits
 *                                  for every other READ and the TMF
 *                                  response, then 1 s more; then queues M more READs at once and
 *                                  waits for them. Prints, times in ms since the first batch was
 *                                  queued (the second batch: since it was queued):
 *                                    "tmf RESPONSE MS"          TMF response code (0: complete)
 *                                    "task I OUTCOME MS"        each READ of the first batch
 *                                    "aborted K none"           no status came for the K-th,
 *                                                               or "aborted K OUTCOME MS"
 *                                    "after I OUTCOME MS"       each READ of the second batch
 * where OUTCOME is GOOD, CHECK_CONDITION/key/asc/ascq in hex (e.g. CHECK_CONDITION/05/25/00)
 * or the status in hex.
 *
 * Output: on GOOD, "status=GOOD" then the data as hex (for vpd/read); on CHECK CONDITION,
 * "status=CHECK_CONDITION key=0x.. asc=0x.. ascq=0x.."; other statuses as "status=0x.."
 * (RESERVATION CONFLICT is 0x18). After a GOOD prin-keys: "generation=N" and one "key=0x..."
 * line per registration; after a GOOD prin-reservation: "generation=N" and either
 * "reservation=none" or "reservation key=0x.. type=N". Exit 0 when the command completed
 * (whatever its status), 1 when login or transport failed.
 */
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define USAGE                                                                               \
  "usage: %s [-i INITIATOR] URL vpd|write|read ARG\n"                                      \
  "       %s [-i INITIATOR] URL prout-register KEY [aptpl] | prout-reserve KEY TYPE |\n"   \
  "                              prout-release KEY TYPE | prout-clear KEY |\n"            \
  "                              prin-keys | prin-reservation | prin-caps\n"                \
  "       %s [-i INITIATOR] URL lunscan L1,L2,... | wait-tur | abort-queued N K M\n"

static uint64_t be64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

static uint32_t be32(const unsigned char *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Print the fields of PERSISTENT RESERVE IN data (SPC-4 6.15.2, 6.15.3) after status=GOOD. */
static void print_prin(struct scsi_task *task, int sa) {
  const unsigned char *d = task->datain.data;
  int n = task->datain.size;
  if (task->status != SCSI_STATUS_GOOD || n < 8) return;
  printf("generation=%" PRIu32 "\n", be32(d));
  uint32_t additional = be32(d + 4);
  if (sa == SCSI_PERSISTENT_RESERVE_READ_KEYS) {
    for (uint32_t at = 8; at + 8 <= 8 + additional && (int)(at + 8) <= n; at += 8) {
      printf("key=0x%016" PRIx64 "\n", be64(d + at));
    }
  } else if (sa == SCSI_PERSISTENT_RESERVE_READ_RESERVATION) {
    if (additional < 16 || n < 24) {
      printf("reservation=none\n");
    } else {
      printf("reservation key=0x%016" PRIx64 " type=%d\n", be64(d + 8), d[21] & 0x0f);
    }
  }
}

/* One line's worth of outcome: GOOD, CHECK_CONDITION/kk/aa/qq, or the status in hex. */
static void outcome(char *buf, size_t size, struct scsi_task *task) {
  if (task == NULL) {
    snprintf(buf, size, "NO_TASK");
  } else if (task->status == SCSI_STATUS_GOOD) {
    snprintf(buf, size, "GOOD");
  } else if (task->status == SCSI_STATUS_CHECK_CONDITION) {
    snprintf(buf, size, "CHECK_CONDITION/%02x/%02x/%02x", task->sense.key,
             (task->sense.ascq >> 8) & 0xff, task->sense.ascq & 0xff);
  } else {
    snprintf(buf, size, "0x%02x", task->status);
  }
}

/* lunscan: read and write LBA 0 of each listed LUN on this one session. */
static int lunscan(struct iscsi_context *iscsi, const char *list) {
  unsigned char block[512];
  char text[64];
  memset(block, 0x55, sizeof(block));
  for (const char *p = list; *p != '\0';) {
    char *end;
    long lun = strtol(p, &end, 0);
    if (end == p) {
      fprintf(stderr, "bad LUN list: %s\n", list);
      return 2;
    }
    struct scsi_task *t = iscsi_read10_sync(iscsi, (int)lun, 0, 512, 512, 0, 0, 0, 0, 0);
    outcome(text, sizeof(text), t);
    printf("lun=%ld read=%s\n", lun, text);
    if (t != NULL) scsi_free_scsi_task(t);
    t = iscsi_write10_sync(iscsi, (int)lun, 0, block, 512, 512, 0, 0, 0, 0, 0);
    outcome(text, sizeof(text), t);
    printf("lun=%ld write=%s\n", lun, text);
    if (t != NULL) scsi_free_scsi_task(t);
    p = *end == ',' ? end + 1 : end;
  }
  return 0;
}

/* wait-tur: see the usage at the top. */
static int wait_tur(struct iscsi_context *iscsi, int lun) {
  char line[256];
  char text[64];
  printf("ready\n");
  fflush(stdout);
  if (fgets(line, sizeof(line), stdin) == NULL) return 1;
  for (int i = 1; i <= 2; i++) {
    struct scsi_task *t = iscsi_testunitready_sync(iscsi, lun);
    outcome(text, sizeof(text), t);
    printf("tur%d %s\n", i, text);
    if (t != NULL) scsi_free_scsi_task(t);
  }
  return 0;
}

/* abort-queued: see the usage at the top. */
#define MAX_QUEUED 64

struct queued {
  int index;          /* 1-based, within its batch */
  const char *label;  /* "task" or "after" */
  int done;
  struct timespec *t0;
  int *pending;
};

static struct timespec batch1_t0;
static struct timespec batch2_t0;
static int aborted_index = 0;
static int tmf_done = 0;
static int cancelling = 0;

static double ms_since(const struct timespec *t0) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

static void queued_cb(struct iscsi_context *iscsi, int status, void *command_data,
                      void *private_data) {
  struct scsi_task *task = command_data;
  struct queued *q = private_data;
  char text[64];
  (void)iscsi;
  (void)status;
  q->done = 1;
  (*q->pending)--;
  if (cancelling) {
    /* Our own local cancel of the aborted task once the target sent nothing for it. */
  } else if (q->t0 == &batch1_t0 && q->index == aborted_index) {
    outcome(text, sizeof(text), task);
    printf("aborted %d %s %.0f\n", q->index, text, ms_since(q->t0));
  } else {
    outcome(text, sizeof(text), task);
    printf("%s %d %s %.0f\n", q->label, q->index, text, ms_since(q->t0));
  }
  fflush(stdout);
  scsi_free_scsi_task(task);
}

static void tmf_cb(struct iscsi_context *iscsi, int status, void *command_data,
                   void *private_data) {
  (void)iscsi;
  (void)private_data;
  tmf_done = 1;
  if (status != SCSI_STATUS_GOOD || command_data == NULL) {
    printf("tmf error %.0f\n", ms_since(&batch1_t0));
  } else {
    printf("tmf %u %.0f\n", *(uint32_t *)command_data, ms_since(&batch1_t0));
  }
  fflush(stdout);
}

/* Service the connection until `done()` or `timeout_ms` passed; -1 on a transport error. */
static int service_until(struct iscsi_context *iscsi, int (*done)(void), double timeout_ms) {
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (!done()) {
    if (ms_since(&t0) > timeout_ms) return 0;
    struct pollfd pfd = {.fd = iscsi_get_fd(iscsi), .events = iscsi_which_events(iscsi)};
    if (poll(&pfd, 1, 50) < 0) return -1;
    if (iscsi_service(iscsi, pfd.revents) < 0) {
      fprintf(stderr, "iscsi_service failed: %s\n", iscsi_get_error(iscsi));
      return -1;
    }
  }
  return 0;
}

static int pending1 = 0;
static int aborted_batch_size = 0;
static int pending2 = 0;
static int first_batch_done(void) { return tmf_done && pending1 <= (aborted_index > 0 ? 1 : 0); }
static int never(void) { return 0; }
static struct iscsi_context *probe_ctx;
static int first_sent_and_done(void) {
  return iscsi_out_queue_length(probe_ctx) == 0 && pending1 < aborted_batch_size;
}
static int second_batch_done(void) { return pending2 == 0; }

static int abort_queued(struct iscsi_context *iscsi, int lun, int n, int k, int m) {
  static struct queued q1[MAX_QUEUED];
  static struct queued q2[MAX_QUEUED];
  struct scsi_task *victim = NULL;
  if (n < 2 || n > MAX_QUEUED || k < 2 || k > n || m < 0 || m > MAX_QUEUED) {
    fprintf(stderr, "abort-queued: need 2 <= K <= N <= %d and 0 <= M <= %d\n", MAX_QUEUED,
            MAX_QUEUED);
    return 2;
  }
  struct scsi_task *cap = iscsi_readcapacity10_sync(iscsi, lun, 0, 0);
  struct scsi_readcapacity10 *rc = cap ? scsi_datain_unmarshall(cap) : NULL;
  if (rc == NULL) {
    fprintf(stderr, "read capacity failed: %s\n", iscsi_get_error(iscsi));
    return 1;
  }
  int block = (int)rc->block_size;
  scsi_free_scsi_task(cap);
  aborted_index = k;
  clock_gettime(CLOCK_MONOTONIC, &batch1_t0);
  for (int i = 0; i < n; i++) {
    q1[i] = (struct queued){.index = i + 1, .label = "task", .t0 = &batch1_t0, .pending = &pending1};
    struct scsi_task *t = iscsi_read10_task(iscsi, lun, (uint32_t)i, block, block, 0, 0, 0, 0, 0,
                                            queued_cb, &q1[i]);
    if (t == NULL) {
      fprintf(stderr, "read10 failed: %s\n", iscsi_get_error(iscsi));
      return 1;
    }
    pending1++;
    if (i + 1 == k) victim = t;
  }
  /* Every READ on the wire, and one answered: the target has received the K-th. */
  probe_ctx = iscsi;
  aborted_batch_size = n;
  if (service_until(iscsi, first_sent_and_done, 60000) < 0) return 1;
  if (q1[k - 1].done) {
    fprintf(stderr, "READ %d completed before it could be aborted\n", k);
    return 1;
  }
  printf("sent %.0f\n", ms_since(&batch1_t0));
  fflush(stdout);
  /* Generic TMF, not iscsi_task_mgmt_abort_task_async (which also cancels the task locally):
     the task stays known to libiscsi, so that a status the target sent for it would show. */
  if (iscsi_task_mgmt_async(iscsi, lun, ISCSI_TM_ABORT_TASK, victim->itt, victim->cmdsn, tmf_cb,
                            NULL) != 0) {
    fprintf(stderr, "abort task failed: %s\n", iscsi_get_error(iscsi));
    return 1;
  }
  if (service_until(iscsi, first_batch_done, 60000) < 0) return 1;
  if (!first_batch_done()) {
    fprintf(stderr, "first batch did not complete in time\n");
    return 1;
  }
  if (service_until(iscsi, never, 1000) < 0) return 1;
  if (!q1[k - 1].done) {
    printf("aborted %d none\n", k);
    fflush(stdout);
    cancelling = 1;
    iscsi_scsi_cancel_task(iscsi, victim);
    cancelling = 0;
  }
  clock_gettime(CLOCK_MONOTONIC, &batch2_t0);
  for (int i = 0; i < m; i++) {
    q2[i] = (struct queued){.index = i + 1, .label = "after", .t0 = &batch2_t0, .pending = &pending2};
    if (iscsi_read10_task(iscsi, lun, (uint32_t)i, block, block, 0, 0, 0, 0, 0, queued_cb,
                          &q2[i]) == NULL) {
      fprintf(stderr, "read10 failed: %s\n", iscsi_get_error(iscsi));
      return 1;
    }
    pending2++;
  }
  if (service_until(iscsi, second_batch_done, 60000) < 0) return 1;
  return pending2 == 0 ? 0 : 1;
}

static void print_outcome(struct scsi_task *task, int with_data) {
  if (task->status == SCSI_STATUS_GOOD) {
    printf("status=GOOD\n");
    if (with_data) {
      for (int i = 0; i < task->datain.size; i++) printf("%02x", task->datain.data[i]);
      printf("\n");
    }
  } else if (task->status == SCSI_STATUS_CHECK_CONDITION) {
    printf("status=CHECK_CONDITION key=0x%02x asc=0x%02x ascq=0x%02x\n", task->sense.key,
           (task->sense.ascq >> 8) & 0xff, task->sense.ascq & 0xff);
  } else {
    printf("status=0x%02x\n", task->status);
  }
}

int main(int argc, char **argv) {
  const char *initiator = "iqn.2026-11.io.sanmux:test-probe";
  int opt;
  while ((opt = getopt(argc, argv, "i:")) != -1) {
    if (opt == 'i') {
      initiator = optarg;
    } else {
      fprintf(stderr, USAGE, argv[0], argv[0], argv[0]);
      return 2;
    }
  }
  if (argc - optind < 2) {
    fprintf(stderr, USAGE, argv[0], argv[0], argv[0]);
    return 2;
  }
  const char *op = argv[optind + 1];
  int nargs = argc - optind - 2;
  char **args = argv + optind + 2;
  int is_pr = strncmp(op, "prout-", 6) == 0 || strncmp(op, "prin-", 5) == 0;
  int is_wait = strcmp(op, "wait-tur") == 0;
  int is_abort = strcmp(op, "abort-queued") == 0;
  if (!is_pr && nargs != (is_wait ? 0 : is_abort ? 3 : 1)) {
    fprintf(stderr, USAGE, argv[0], argv[0], argv[0]);
    return 2;
  }
  long long arg = nargs > 0 ? strtoll(args[0], NULL, 0) : 0;
  struct iscsi_context *iscsi = iscsi_create_context(initiator);
  struct iscsi_url *url = iscsi_parse_full_url(iscsi, argv[optind]);
  if (url == NULL) {
    fprintf(stderr, "bad url: %s\n", iscsi_get_error(iscsi));
    return 1;
  }
  iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
  iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
  if (iscsi_full_connect_sync(iscsi, url->portal, url->lun) != 0) {
    fprintf(stderr, "login failed: %s\n", iscsi_get_error(iscsi));
    return 1;
  }
  if (strcmp(op, "lunscan") == 0 || is_wait || is_abort) {
    int rc = is_wait    ? wait_tur(iscsi, url->lun)
             : is_abort ? abort_queued(iscsi, url->lun, atoi(args[0]), atoi(args[1]), atoi(args[2]))
                        : lunscan(iscsi, args[0]);
    iscsi_logout_sync(iscsi);
    iscsi_destroy_url(url);
    iscsi_destroy_context(iscsi);
    return rc;
  }
  struct scsi_task *task = NULL;
  int with_data = 0;
  int prin_sa = -1;
  if (strcmp(op, "vpd") == 0) {
    task = iscsi_inquiry_sync(iscsi, url->lun, 1, (int)arg, 255);
    with_data = 1;
  } else if (strcmp(op, "read") == 0 || strcmp(op, "write") == 0) {
    struct scsi_task *cap = iscsi_readcapacity10_sync(iscsi, url->lun, 0, 0);
    struct scsi_readcapacity10 *rc = cap ? scsi_datain_unmarshall(cap) : NULL;
    if (rc == NULL) {
      fprintf(stderr, "read capacity failed: %s\n", iscsi_get_error(iscsi));
      return 1;
    }
    int block = (int)rc->block_size;
    if (op[0] == 'r') {
      task = iscsi_read10_sync(iscsi, url->lun, (uint32_t)arg, block, block, 0, 0, 0, 0, 0);
      with_data = 1;
    } else {
      unsigned char *buf = malloc(block);
      memset(buf, 0x55, block);
      task = iscsi_write10_sync(iscsi, url->lun, (uint32_t)arg, buf, block, block, 0, 0, 0, 0, 0);
      free(buf);
    }
    scsi_free_scsi_task(cap);
  } else if (strncmp(op, "prin-", 5) == 0) {
    int sa;
    if (strcmp(op, "prin-keys") == 0) {
      sa = SCSI_PERSISTENT_RESERVE_READ_KEYS;
    } else if (strcmp(op, "prin-reservation") == 0) {
      sa = SCSI_PERSISTENT_RESERVE_READ_RESERVATION;
    } else if (strcmp(op, "prin-caps") == 0) {
      sa = SCSI_PERSISTENT_RESERVE_REPORT_CAPABILITIES;
      with_data = 1;
    } else {
      fprintf(stderr, "unknown operation %s\n", op);
      return 2;
    }
    task = iscsi_persistent_reserve_in_sync(iscsi, url->lun, sa, 8192);
    prin_sa = sa;
  } else if (strncmp(op, "prout-", 6) == 0) {
    struct scsi_persistent_reserve_out_basic params;
    memset(&params, 0, sizeof(params));
    uint64_t key = nargs > 0 ? strtoull(args[0], NULL, 0) : 0;
    int type = nargs > 1 ? (int)strtol(args[1], NULL, 0) : 0;
    int sa;
    if (strcmp(op, "prout-register") == 0 && (nargs == 1 || nargs == 2)) {
      sa = SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY;
      params.service_action_reservation_key = key;
      params.aptpl = nargs == 2 && strcmp(args[1], "aptpl") == 0;
      type = 0;
    } else if (strcmp(op, "prout-reserve") == 0 && nargs == 2) {
      sa = SCSI_PERSISTENT_RESERVE_RESERVE;
      params.reservation_key = key;
    } else if (strcmp(op, "prout-release") == 0 && nargs == 2) {
      sa = SCSI_PERSISTENT_RESERVE_RELEASE;
      params.reservation_key = key;
    } else if (strcmp(op, "prout-clear") == 0 && nargs == 1) {
      sa = SCSI_PERSISTENT_RESERVE_CLEAR;
      params.reservation_key = key;
    } else {
      fprintf(stderr, USAGE, argv[0], argv[0], argv[0]);
      return 2;
    }
    task = iscsi_persistent_reserve_out_sync(iscsi, url->lun, sa, SCSI_PERSISTENT_RESERVE_SCOPE_LU,
                                             type, &params);
  } else {
    fprintf(stderr, "unknown operation %s\n", op);
    return 2;
  }
  if (task == NULL) {
    fprintf(stderr, "command failed: %s\n", iscsi_get_error(iscsi));
    return 1;
  }
  print_outcome(task, with_data);
  if (prin_sa >= 0) print_prin(task, prin_sa);
  scsi_free_scsi_task(task);
  iscsi_logout_sync(iscsi);
  iscsi_destroy_url(url);
  iscsi_destroy_context(iscsi);
  return 0;
}
