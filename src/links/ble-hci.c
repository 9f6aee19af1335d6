/* SPDX-License-Identifier: MIT */
/*
 * What BlueZ's D-Bus API lacks, through libbluetooth's HCI helpers: the
 * RSSI of a connected link (BlueZ drops the RSSI property on connect) and
 * an LE Connection Update for a short interval during uploads. Needs a raw
 * HCI socket (AF_BLUETOOTH; commands beyond the kernel's security filter
 * need CAP_NET_RAW). Without them every call returns -EOPNOTSUPP and the
 * gateway carries on. The HCI requests wait at most HCI_TIMEOUT_MS.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <bluetooth/bluetooth.h>
#include <bluetooth/hci.h>
#include <bluetooth/hci_lib.h>

#include "links/ble-internal.h"
#include "util/util.h"

#define HCI_TIMEOUT_MS 100
#ifndef LE_LINK
#define LE_LINK 0x80 /* the kernel's link type for LE (not in hci.h) */
#endif

static int errno_unsupported(int e)
{
	if (e == EAFNOSUPPORT || e == EPERM || e == EACCES ||
	    e == EPROTONOSUPPORT || e == ENOSYS)
		return -EOPNOTSUPP;
	return -e;
}

/* Opens the adapter's HCI socket and finds the LE connection's handle. */
static int hci_open_conn(const char *adapter, const char *address,
			 uint16_t *handle)
{
	struct hci_conn_info_req *cr;
	int id, dd, r = 0;

	id = hci_devid(adapter);
	if (id < 0)
		return errno == ENODEV ? -ENODEV : errno_unsupported(errno);
	dd = hci_open_dev(id);
	if (dd < 0)
		return errno_unsupported(errno);
	cr = xzalloc(sizeof(*cr) + sizeof(struct hci_conn_info));
	if (str2ba(address, &cr->bdaddr) < 0)
		r = -EINVAL;
	cr->type = LE_LINK;
	if (!r && ioctl(dd, HCIGETCONNINFO, (unsigned long)cr) < 0)
		r = errno == ENOENT ? -ENOTCONN : errno_unsupported(errno);
	if (!r)
		*handle = htobs(cr->conn_info->handle);
	free(cr);
	if (r) {
		hci_close_dev(dd);
		return r;
	}
	return dd;
}

int ble_hci_read_rssi(const char *adapter, const char *address, int8_t *ret)
{
	uint16_t handle = 0;
	int8_t rssi;
	int dd = hci_open_conn(adapter, address, &handle), r = 0;

	if (dd < 0)
		return dd;
	if (hci_read_rssi(dd, handle, &rssi, HCI_TIMEOUT_MS) < 0)
		r = errno_unsupported(errno ? errno : EIO);
	else
		*ret = rssi;
	hci_close_dev(dd);
	return r;
}

int ble_hci_conn_update(const char *adapter, const char *address,
			uint16_t min_interval, uint16_t max_interval,
			uint16_t latency, uint16_t supervision_timeout)
{
	uint16_t handle = 0;
	int dd = hci_open_conn(adapter, address, &handle), r = 0;

	if (dd < 0)
		return dd;
	if (hci_le_conn_update(dd, handle, min_interval, max_interval, latency,
			       supervision_timeout, HCI_TIMEOUT_MS) < 0)
		r = errno_unsupported(errno ? errno : EIO);
	hci_close_dev(dd);
	return r;
}
