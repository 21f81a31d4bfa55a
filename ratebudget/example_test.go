package ratebudget_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ratebudget"
)

// A handler takes its turn before each API call. When the next free slot is
// further away than MaxWait, it hands the task back to the queue to run
// after the delay, instead of holding a handler.
func Example() {
	mr, _ := miniredis.Run() // stands in for the fleet's Redis
	defer mr.Close()
	mr.SetTime(time.Unix(1_700_000_000, 0)) // freeze the Redis clock, so the output is exact
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	budget, err := ratebudget.New(rdb, ratebudget.Config{Limit: 10, Burst: 1, MaxWait: 250 * time.Millisecond})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	for task := range 4 {
		_, err := budget.Wait(ctx)
		if de, ok := ratebudget.IsDelay(err); ok {
			fmt.Printf("task %d: rate_limited, retry in %v (%s)\n", task, de.RetryIn, de.Reason)
			continue
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("task %d: call the API\n", task)
	}
	// Output:
	// task 0: call the API
	// task 1: call the API
	// task 2: call the API
	// task 3: rate_limited, retry in 300ms (budget)
}

// After the API answers 429 with Retry-After, the whole fleet cools down.
func ExampleBudget_CoolDown() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	mr.SetTime(time.Unix(1_700_000_000, 0))
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	budget, _ := ratebudget.New(rdb, ratebudget.Config{Limit: 10})
	ctx := context.Background()
	retryAfter := 2 * time.Second // from the 429
	if err := budget.CoolDown(ctx, retryAfter); err != nil {
		fmt.Println(err)
		return
	}
	remaining, _ := budget.CoolDownRemaining(ctx)
	fmt.Println("cool-down remaining:", remaining)

	r, _ := budget.Reserve(ctx)
	fmt.Println("next slot in", r.Delay, "because of", r.Reason)
	// Output:
	// cool-down remaining: 2s
	// next slot in 2s because of cooldown
}
