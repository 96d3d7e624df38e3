/*
 * pr_hold: a libiscsi host that holds a persistent reservation registration.
 *
 * Usage: pr_hold INITIATOR-IQN iscsi://HOST:PORT/TARGET/LUN KEY SECONDS
 *
 * Logs in with libiscsi (which draws its own ISID), registers KEY with PERSISTENT RESERVE OUT
 * REGISTER (SPC-4 6.14), prints "registered", then writes and reads back one block at a time
 * for SECONDS, and finally checks with READ KEYS that KEY is still registered. Prints "io N" at
 * the end and exits 0 only when every command succeeded. Used by
 * crates/portshift/tests/persistent_reservations.rs (libiscsi's CLI tools issue no PR commands).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

static int good(struct scsi_task *t, struct iscsi_context *iscsi, const char *what)
{
	if (t == NULL) {
		fprintf(stderr, "%s: %s\n", what, iscsi_get_error(iscsi));
		return 0;
	}
	if (t->status != SCSI_STATUS_GOOD) {
		fprintf(stderr, "%s: status 0x%02x %s\n", what, t->status, iscsi_get_error(iscsi));
		scsi_free_scsi_task(t);
		return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s INITIATOR URL KEY SECONDS\n", argv[0]);
		return 2;
	}
	uint64_t key = strtoull(argv[3], NULL, 0);
	int seconds = atoi(argv[4]);
	struct iscsi_context *iscsi = iscsi_create_context(argv[1]);
	struct iscsi_url *url = iscsi ? iscsi_parse_full_url(iscsi, argv[2]) : NULL;
	if (url == NULL) {
		fprintf(stderr, "bad URL %s\n", argv[2]);
		return 1;
	}
	iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	if (iscsi_set_targetname(iscsi, url->target) != 0 ||
	    iscsi_full_connect_sync(iscsi, url->portal, url->lun) != 0) {
		fprintf(stderr, "login: %s\n", iscsi_get_error(iscsi));
		return 1;
	}
	int lun = url->lun;

	struct scsi_persistent_reserve_out_basic p;
	memset(&p, 0, sizeof(p));
	p.service_action_reservation_key = key;
	struct scsi_task *t = iscsi_persistent_reserve_out_sync(
		iscsi, lun, SCSI_PERSISTENT_RESERVE_REGISTER, SCSI_PERSISTENT_RESERVE_SCOPE_LU, 0, &p);
	if (!good(t, iscsi, "REGISTER"))
		return 1;
	scsi_free_scsi_task(t);
	printf("registered\n");
	fflush(stdout);

	unsigned char block[512];
	long n = 0;
	time_t end = time(NULL) + seconds;
	while (time(NULL) < end) {
		memset(block, (int)(n & 0xff), sizeof(block));
		t = iscsi_write16_sync(iscsi, lun, (uint64_t)(n % 64), block, sizeof(block), 512, 0, 0,
				       0, 0, 0);
		if (!good(t, iscsi, "WRITE(16)"))
			return 1;
		scsi_free_scsi_task(t);
		t = iscsi_read16_sync(iscsi, lun, (uint64_t)(n % 64), sizeof(block), 512, 0, 0, 0, 0, 0);
		if (!good(t, iscsi, "READ(16)"))
			return 1;
		scsi_free_scsi_task(t);
		n++;
		struct timespec pause = {0, 20 * 1000 * 1000};
		nanosleep(&pause, NULL);
	}

	t = iscsi_persistent_reserve_in_sync(iscsi, lun, SCSI_PERSISTENT_RESERVE_READ_KEYS, 1024);
	if (!good(t, iscsi, "READ KEYS"))
		return 1;
	struct scsi_persistent_reserve_in_read_keys *rk = scsi_datain_unmarshall(t);
	int found = 0;
	for (int i = 0; rk && i < rk->num_keys; i++)
		found |= rk->keys[i] == key;
	scsi_free_scsi_task(t);
	if (!found) {
		fprintf(stderr, "READ KEYS: key 0x%" PRIx64 " no longer registered\n", key);
		return 1;
	}
	printf("io %ld\n", n);
	iscsi_logout_sync(iscsi);
	iscsi_destroy_url(url);
	iscsi_destroy_context(iscsi);
	return 0;
}
