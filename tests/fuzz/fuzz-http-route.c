/* SPDX-License-Identifier: MIT */
/* The REST route matcher and problem builder on hostile request paths:
 * first byte picks the method, the rest is the path as libmicrohttpd hands
 * it over (already unescaped, so any byte but NUL may appear). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/errors.h"
#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned methods[] = { HTTP_GET, HTTP_POST, HTTP_PUT, HTTP_DELETE, 0 };
	struct http_match m = { 0 };
	unsigned allow = 0;
	char *path;
	json_t *p;

	if (size < 1 || size > 4096)
		return 0;
	path = malloc(size);
	memcpy(path, data + 1, size - 1);
	path[size - 1] = '\0';
	if (http_route_match(path, methods[data[0] % 5], &m, &allow) == 0) {
		for (size_t i = 0; i < m.nparams; i++)
			if (!m.values[i] || !m.values[i][0] || strchr(m.values[i], '/'))
				abort(); /* a parameter is one non-empty segment */
		http_match_clear(&m);
	}
	p = http_problem_new(-(int)(data[0] % 140), path, path);
	json_decref(p);
	free(path);
	return 0;
}
