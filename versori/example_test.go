package versori_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

// The worker's view of one import: call, classify, act on the class.
func ExampleClient_ImportPublicConnectorVersion() {
	fake := versoritest.NewServer()
	defer fake.Close()

	c, err := versori.New(versori.Config{
		BaseURL:         fake.URL, // plain http is accepted for loopback only
		APIKey:          fake.APIKey(),
		Timeout:         10 * time.Second,
		MaxConnsPerHost: 20, // the worker's concurrency
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// IDs are parsed once, where they come in; the client takes the types.
	org := versori.MustParseOrgID("01JB8W3XKZ0000000000000001")
	connector := versori.MustParseConnectorID("01J8Z3K4M5N6P7Q8R9S0T1V2W3")
	fake.FailNext(string(org), 1, versoritest.Fault{Kind: versoritest.FaultRateLimited, RetryAfter: "2"})

	for attempt := 1; attempt <= 3; attempt++ {
		_, err := c.ImportPublicConnectorVersion(context.Background(), org, connector, "latest")
		class := versori.Classify(err)
		switch {
		case class.Succeeded():
			fmt.Println(attempt, class, "done")
		case class.Retryable():
			d, _ := versori.RetryAfter(err)
			fmt.Println(attempt, class, "retry in", d)
			continue
		default:
			var apiErr *versori.Error
			if errors.As(err, &apiErr) {
				fmt.Println(attempt, class, apiErr.StatusCode, apiErr.Message)
			}
		}
	}
	// Output:
	// 1 rate_limited retry in 2s
	// 2 imported done
	// 3 already_present done
}

func ExampleClassify() {
	for _, err := range []error{
		nil,
		&versori.Error{StatusCode: 409, Class: versori.ClassAlreadyPresent},
		context.DeadlineExceeded,
		versori.ValidateID("organisation ID", "../admin"),
	} {
		c := versori.Classify(err)
		fmt.Printf("%s succeeded=%t retryable=%t permanent=%t\n", c, c.Succeeded(), c.Retryable(), c.Permanent())
	}
	// Output:
	// imported succeeded=true retryable=false permanent=false
	// already_present succeeded=true retryable=false permanent=false
	// timeout succeeded=false retryable=true permanent=false
	// invalid succeeded=false retryable=false permanent=true
}

// ParseOrgID validates an organisation ID and returns it in canonical form:
// one organisation spelt in any case is one ID.
func ExampleParseOrgID() {
	id, err := versori.ParseOrgID("01jb8w3xkz0000000000000001")
	fmt.Println(id, err)
	_, err = versori.ParseOrgID("01JB8W3XKZ000000000000000１") // a full-width digit
	fmt.Println(err)
	// Output:
	// 01JB8W3XKZ0000000000000001 <nil>
	// invalid organisation ID "01JB8W3XKZ000000000000000１": character 26 ('１') is not Crockford base32
}
