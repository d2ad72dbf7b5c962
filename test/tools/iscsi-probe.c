/*
 * iscsi-probe: issue one SCSI command through libiscsi (a real initiator) and print the raw
 * outcome, for tests that need bytes or sense codes the stock iscsi-* tools do not show.
 *
 *   iscsi-probe [-i INITIATOR] URL vpd PAGE      prints the page's bytes as hex
 *   iscsi-probe [-i INITIATOR] URL write LBA     writes one block of 0x55 bytes with WRITE(10)
 *   iscsi-probe [-i INITIATOR] URL read LBA      reads one block with READ(10), prints hex
 *
 * Output: on GOOD, "status=GOOD" then the data as hex (for vpd/read); on CHECK CONDITION,
 * "status=CHECK_CONDITION key=0x.. asc=0x.. ascq=0x..". Exit 0 when the command completed
 * (whatever its status), 1 when login or transport failed.
 */
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
      fprintf(stderr, "usage: %s [-i INITIATOR] URL vpd|write|read ARG\n", argv[0]);
      return 2;
    }
  }
  if (argc - optind != 3) {
    fprintf(stderr, "usage: %s [-i INITIATOR] URL vpd|write|read ARG\n", argv[0]);
    return 2;
  }
  const char *op = argv[optind + 1];
  long long arg = strtoll(argv[optind + 2], NULL, 0);
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
  struct scsi_task *task = NULL;
  int with_data = 0;
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
  } else {
    fprintf(stderr, "unknown operation %s\n", op);
    return 2;
  }
  if (task == NULL) {
    fprintf(stderr, "command failed: %s\n", iscsi_get_error(iscsi));
    return 1;
  }
  print_outcome(task, with_data);
  scsi_free_scsi_task(task);
  iscsi_logout_sync(iscsi);
  iscsi_destroy_url(url);
  iscsi_destroy_context(iscsi);
  return 0;
}
